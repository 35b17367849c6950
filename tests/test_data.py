"""Data sets: the embedded `digits`, and torchvision's readers on files the tests write themselves."""
import pickle
import struct

import numpy as np
import pytest
import torch

import data
from data import get_dataset
from plumbing.errors import UsageError


def test_digits_is_embedded_28x28_and_split_by_a_fixed_seed():
    test, train = get_dataset('digits', 'nowhere', 'test'), get_dataset('digits', 'nowhere', 'train')
    assert (len(test), len(train)) == (1000, 797)
    x, y = test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) <= 1.0
    assert sorted(set(test.targets.tolist())) == list(range(10))
    again = get_dataset('digits', 'nowhere', 'test')
    assert torch.equal(again.images, test.images) and torch.equal(again.targets, test.targets)
    # train and test are disjoint: no training image equals a test image
    flat_test = {tuple(v) for v in test.images.flatten(1).numpy().round(6)}
    assert not any(tuple(v) in flat_test for v in train.images.flatten(1).numpy().round(6)[:200])


def _idx(path, array):
    # MNIST's IDX format: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, then the bytes
    with open(path, 'wb') as f:
        f.write(struct.pack('>BBBB', 0, 0, 8, array.ndim))
        f.write(struct.pack('>' + 'I' * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_reads_torchvision_layout(tmp_path):
    raw = tmp_path / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (('train', 30), ('t10k', 12)):
        _idx(raw / f'{prefix}-images-idx3-ubyte', rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f'{prefix}-labels-idx1-ubyte', rng.integers(0, 10, (n,)))
    test = get_dataset('mnist', str(tmp_path), 'test', download=False)
    x, y = test[3]
    assert len(test) == 12 and x.shape == (1, 28, 28) and 0 <= y < 10
    assert float(x.max()) <= 1.0
    assert len(get_dataset('mnist', str(tmp_path), 'train', download=False)) == 30


def test_mnist_garbage_files_are_a_clear_error(tmp_path):
    raw = tmp_path / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                 't10k-labels-idx1-ubyte'):
        (raw / name).write_bytes(b'not mnist at all')
    with pytest.raises(UsageError, match='cannot be read as mnist'):
        get_dataset('mnist', str(tmp_path), 'test', download=False)


def test_cifar10_reads_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets as D
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']:
        with open(folder / name, 'wb') as f:
            pickle.dump({'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8), 'labels': [0, 1, 2, 3]}, f)
    with open(folder / 'batches.meta', 'wb') as f:
        pickle.dump({'label_names': [str(i) for i in range(10)]}, f)
    # torchvision checks the real files' MD5 sums; these files are the tests' own
    monkeypatch.setattr(D.cifar, 'check_integrity', lambda *args, **kwargs: True)
    train = get_dataset('cifar10', str(tmp_path), 'train', download=False)
    test = get_dataset('cifar10', str(tmp_path), 'test', download=False)
    assert (len(train), len(test)) == (20, 4)
    x, y = test[2]
    assert x.shape == (3, 32, 32) and y == 2
    expected = torch.from_numpy(test.data[2]).permute(2, 0, 1).float() / 255
    assert torch.allclose(x, expected)  # the test transform is ToTensor only: no normalisation
    assert train[0][0].shape == (3, 32, 32)


def test_svhn_reads_torchvision_layout(tmp_path, monkeypatch):
    import scipy.io as sio
    import torchvision.datasets as D
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        sio.savemat(tmp_path / f'{split}_32x32.mat', {'X': rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8),
                                                      'y': np.array([[10], [1], [2], [3], [4]], dtype=np.uint8)})
    monkeypatch.setattr(D.SVHN, '_check_integrity', lambda self: True)
    test = get_dataset('svhn', str(tmp_path), 'test', download=False)
    x, y = test[0]
    assert x.shape == (3, 32, 32) and y == 0  # SVHN's label 10 is the digit 0


def test_imagenet_is_an_image_folder_with_the_standard_crops(tmp_path):
    from PIL import Image
    for split in ('train', 'val'):
        for wnid in ('n01', 'n02'):
            (tmp_path / split / wnid).mkdir(parents=True)
            Image.fromarray(np.zeros((300, 260, 3), dtype=np.uint8)).save(tmp_path / split / wnid / 'a.png')
    test = get_dataset('imagenet', str(tmp_path), 'test')
    train = get_dataset('imagenet', str(tmp_path), 'train')
    assert len(test) == 2 and test[1][0].shape == (3, 224, 224) and test[1][1] == 1
    assert train[0][0].shape == (3, 224, 224)


def test_missing_data_says_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=r'MNIST/raw/ .*--no_download.*train-images-idx3-ubyte'):
        get_dataset('mnist', str(tmp_path), 'test', download=False)
    with pytest.raises(UsageError, match=r'cifar-10-batches-py/.*cifar-10-python.tar.gz'):
        get_dataset('cifar10', str(tmp_path), 'test', download=False)
    with pytest.raises(UsageError, match=r'test_32x32.mat'):
        get_dataset('svhn', str(tmp_path), 'test', download=False)
    with pytest.raises(UsageError, match=r'imagenet: .*val not found.*cannot be downloaded'):
        get_dataset('imagenet', str(tmp_path), 'test')
    with pytest.raises(UsageError, match='unknown dataset'):
        get_dataset('cifar100', str(tmp_path), 'test')


def test_a_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets as D

    def offline(self):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(D.MNIST, 'download', offline)
    with pytest.raises(UsageError, match=r'download failed \(<urlopen error no network>\).*put'):
        get_dataset('mnist', str(tmp_path), 'test', download=True)


def test_transforms_follow_the_paper():
    import torchvision.transforms as T
    cifar = data.transforms_for('cifar10', 'train').transforms
    assert isinstance(cifar[0], T.RandomCrop) and cifar[0].size == (32, 32) and cifar[0].padding == 4
    assert isinstance(cifar[1], T.RandomHorizontalFlip) and isinstance(cifar[2], T.ToTensor)
    assert isinstance(data.transforms_for('mnist', 'train'), T.ToTensor)
    assert isinstance(data.transforms_for('cifar10', 'test'), T.ToTensor)
