"""Data sets: MNIST, Fashion-MNIST, Cifar-10, SVHN and ImageNet through torchvision, and the embedded `digits`.
Fashion-MNIST is read from --root, else from Debian's copy (`apt-get install dataset-fashion-mnist`).

Every image is a float tensor in [0, 1]: randomized smoothing adds its noise in pixel space, and a
model that wants normalised inputs normalises them in its first layer, after the noise
(docs/METHOD.md, "Randomized smoothing"). Augmentation follows the public MACER code (docs/METHOD.md,
"Hyper-parameters").

`training_loader` shuffles and reads the training set so that epoch e's minibatches (order and
augmentation) are a function of (--seed, e, rank, world) alone, whether the run was resumed or not.
"""
import hashlib
import os
import random
import socket

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from plumbing.errors import UsageError, first_line

DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'svhn', 'imagenet')
# the data sets held in memory as one tensor (`TensorImages`): no loader workers are needed
IN_MEMORY = ('digits', 'fashion_mnist')
NUM_CLASSES = {'digits': 10, 'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10, 'svhn': 10, 'imagenet': 1000}
INPUT_SHAPE = {'digits': (1, 28, 28), 'mnist': (1, 28, 28), 'fashion_mnist': (1, 28, 28), 'cifar10': (3, 32, 32),
               'svhn': (3, 32, 32), 'imagenet': (3, 224, 224)}

# `digits`: scikit-learn's 1797 bundled 8x8 digits, upsampled to MNIST's 28x28 so LeNet applies.
# 1000 test images, so the MACER code's default test images 500..999 exist here too.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 1000

# a download that cannot reach its server gives up after this long instead of hanging
DOWNLOAD_TIMEOUT_S = 30

# what to put where when a data set is missing and cannot be downloaded
_WHERE = {
    'mnist': ('{root}/MNIST/raw/', 'train-images-idx3-ubyte, train-labels-idx1-ubyte, '
              't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (unpacked from yann.lecun.com/exdb/mnist)'),
    'fashion_mnist': ('{root}/FashionMNIST/raw/', 'train-images-idx3-ubyte, train-labels-idx1-ubyte, '
                      't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (Debian packages them: apt-get install '
                      'dataset-fashion-mnist, and this tool then reads its copy)'),
    'cifar10': ('{root}/cifar-10-batches-py/', 'the unpacked cifar-10-python.tar.gz '
                '(data_batch_1..5, test_batch, batches.meta) from www.cs.toronto.edu/~kriz/cifar.html'),
    'svhn': ('{root}/', 'train_32x32.mat and test_32x32.mat from ufldl.stanford.edu/housenumbers'),
}


class TensorImages(Dataset):
    """Images held in memory as one tensor `[N, C, H, W]` in [0, 1], with integer labels."""

    def __init__(self, images, labels):
        self.images = images
        self.targets = labels

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])


def digits(split):
    """The embedded data set: no download, no `--root`; the split is fixed by a seed."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # [1797, 1, 8, 8], 0..16 -> [0, 1]
    images = F.interpolate(images, size=(28, 28), mode='bilinear', align_corners=False).clamp_(0.0, 1.0)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.from_numpy(np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels)))
    chosen = order[:DIGITS_TEST_SIZE] if split == 'test' else order[DIGITS_TEST_SIZE:]
    return TensorImages(images[chosen].contiguous(), labels[chosen].contiguous())


def transforms_for(dataset, split):
    """The augmentation of docs/METHOD.md, "Hyper-parameters" (training), and the plain test transform."""
    import torchvision.transforms as T
    if dataset in ('cifar10', 'svhn'):
        if split == 'train':
            return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.ToTensor()
    if dataset == 'imagenet':
        if split == 'train':
            return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    return T.ToTensor()


def get_dataset(dataset, root, split, download=True, augment=None):
    """The `split` ('train' or 'test') of `dataset`, images in [0, 1]; a UsageError when absent. `augment`: the
    training augmentation (default: for the training split only; False gives the training images as the test
    transform gives test images, as a certification of the training set reads them)."""
    if dataset not in DATASETS:
        raise UsageError(f'unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    if split not in ('train', 'test'):
        raise ValueError(split)
    if dataset == 'digits':
        return digits(split)
    transform = transforms_for(dataset, split if augment is None or split == 'test' else
                               ('train' if augment else 'test'))
    if dataset == 'imagenet':
        return _imagenet(root, split, transform)
    return _torchvision(dataset, root, split, download, transform)


def _torchvision(dataset, root, split, download, transform):
    import torchvision.datasets as D
    cls, kwargs = {
        'mnist': (D.MNIST, {'train': split == 'train'}),
        'fashion_mnist': (D.FashionMNIST, {'train': split == 'train'}),
        'cifar10': (D.CIFAR10, {'train': split == 'train'}),
        'svhn': (D.SVHN, {'split': split}),
    }[dataset]
    folder, files = _WHERE[dataset]
    folder = folder.format(root=root.rstrip('/'))
    for attempt in range(2):
        try:
            return in_memory(dataset, cls(root=root, transform=transform, download=False, **kwargs))
        except RuntimeError:
            pass  # not there (or failed its checksum): Debian's copy, or a download, below
        except Exception as e:
            raise UsageError(f'{dataset}: the files under {folder} cannot be read as {dataset} '
                             f'({first_line(e)}); replace them with {files}') from None
        if attempt or not (dataset == 'fashion_mnist' and unpack_debian_copy(folder, DEBIAN_FASHION_MNIST)):
            break
    if not download:
        raise UsageError(f'{dataset}: no readable copy under {folder} (and --no_download is set): put {files} there')
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return in_memory(dataset, cls(root=root, transform=transform, download=True, **kwargs))
    except Exception as e:
        raise UsageError(f'{dataset}: no readable copy under {folder} and the download failed ({first_line(e)}): '
                         f'put {files} there') from None
    finally:
        socket.setdefaulttimeout(previous)


def in_memory(dataset, read):
    """Fashion-MNIST as one tensor in memory (`TensorImages`): torchvision's reader gives the images as uint8, and
    its ToTensor, the only transform there is (no augmentation), is x / 255 in float32, so the same values, read
    without a PIL image per sample (a CPU epoch of LeNet is then limited by the network, not the loader). Other
    data sets as torchvision reads them."""
    if dataset != 'fashion_mnist':
        return read
    images = read.data.unsqueeze(1).to(torch.float32).div_(255.0)
    return TensorImages(images.contiguous(), read.targets.clone().long())


# Debian's dataset-fashion-mnist: the four idx files, gzip-compressed
DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                       't10k-labels-idx1-ubyte')


def unpack_debian_copy(folder, source=DEBIAN_FASHION_MNIST):
    """Unpack Debian's copy of Fashion-MNIST (`apt-get install dataset-fashion-mnist`) into `folder` (--root's
    FashionMNIST/raw/, where torchvision's reader looks, as its download would put them); False when Debian's copy
    is not installed. Each file is written whole (a temporary, then renamed) and checked to be the idx file it
    should be; a folder that cannot be written is one line."""
    import gzip
    sources = [os.path.join(source, name + '.gz') for name in FASHION_MNIST_FILES]
    if not all(os.path.isfile(p) for p in sources):
        return False
    from plumbing.files import atomic_write
    try:
        os.makedirs(folder, exist_ok=True)
        for name, path in zip(FASHION_MNIST_FILES, sources):
            target = os.path.join(folder, name)
            if os.path.isfile(target):
                continue
            with gzip.open(path, 'rb') as f:
                data = f.read()
            if data[:4] not in (b'\x00\x00\x08\x01', b'\x00\x00\x08\x03'):  # idx magic: labels, images
                raise UsageError(f'{path} is not an idx file of Fashion-MNIST; reinstall dataset-fashion-mnist')
            atomic_write(target, lambda tmp: open(tmp, 'wb').write(data))
    except OSError as e:
        raise UsageError(f'fashion_mnist: cannot unpack Debian\'s copy ({source}) into {folder} ({e.strerror}); choose '
                         f'a --root you can write to') from None
    print(f'==> fashion_mnist: unpacked Debian\'s copy ({source}) into {folder}', flush=True)
    return True


def _imagenet(root, split, transform):
    import torchvision.datasets as D
    folder = os.path.join(root, 'train' if split == 'train' else 'val')
    if not os.path.isdir(folder):
        raise UsageError(f'imagenet: {folder} not found (ImageNet cannot be downloaded automatically): '
                         f'put the ILSVRC2012 {"train" if split == "train" else "val"} images there, '
                         f'one folder per class (ROOT/train/n01440764/*.JPEG, ROOT/val/n01440764/*.JPEG)')
    try:
        return D.ImageFolder(folder, transform=transform)
    except (FileNotFoundError, OSError) as e:
        raise UsageError(f'imagenet: {folder} holds no class folders with images ({first_line(e)}); '
                         f'put one folder of images per class there') from None


def sample_seed(seed, epoch, index):
    """The seed of image `index`'s augmentation in epoch `epoch` of a run seeded `seed`: the first 64 bits of
    BLAKE2b of the three numbers. It depends on nothing else: not on the worker process or the rank that
    reads the image, nor on what any random-number generator has drawn before."""
    digest = hashlib.blake2b(f'{seed}/{epoch}/{index}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little')


class Indexed(Dataset):
    """`dataset` with each image's index beside it, (image, label, index): for a method that reads per-image data
    (CAT-RS's smoothed predictions). Reading an image draws what `dataset[i]` draws, nothing more."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return image, label, index


class EpochSamples(Dataset):
    """`dataset` read by (epoch, index) keys (from `EpochSampler`): image `index`, augmented with the
    generators of torch (CPU), `random` and NumPy seeded by `sample_seed(seed, epoch, index)`.

    For loader worker processes only. An image's augmentation in an epoch is then the same whichever
    worker reads it, however many workers there are, and whether they started this epoch (a resumed
    run) or carry on from the last one (persistent workers, whose generators would otherwise continue
    where the last epoch left them). In the main process this seeding would reset the training noise's
    generator: with --workers 0 the augmentation draws from the main process's generators instead,
    which the checkpoint restores.
    """

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        seed = sample_seed(self.seed, epoch, index)
        # the CPU generator alone (torchvision's transforms draw from it): torch.manual_seed would also
        # seed every GPU's, 200 times slower
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)  # NumPy's legacy seed has 32 bits
        return self.dataset[index]


class EpochSampler(Sampler):
    """This rank's share of an epoch's shuffle as (epoch, index) keys for `EpochSamples`.

    The order is torch's DistributedSampler's: a permutation drawn from a generator seeded by
    seed + epoch, of which rank r of a job of `world` takes every world-th index from r (padded to
    equal shares). One process (world 1) reads the whole permutation. `set_epoch(e)` before each epoch.
    """

    def __init__(self, dataset, seed, rank=0, world=1):
        self.order = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch  # fixed when the epoch's iteration starts
        return ((epoch, index) for index in self.order)

    def __len__(self):
        return len(self.order)


def training_loader(dataset, *, batch_size, workers, seed, rank=0, world=1, pin_memory=False, with_index=False):
    """Shuffled minibatches of the training set for rank `rank` of a job of `world` processes: returns
    `(loader, sampler)`; call `sampler.set_epoch(epoch)` before each epoch when `sampler` is not None.

    With worker processes (`workers` > 0) epoch e's order and augmentation are functions of (seed, e,
    rank, world) alone (`EpochSampler`, `EpochSamples`): the main process's generators, which draw the
    training noise and which a checkpoint restores, are left untouched, so a resumed run reads exactly
    the minibatches of an uninterrupted one. The workers persist across epochs, as nothing they carry
    over enters an image. With `workers` == 0 the loader is the one of version 1.0 (RandomSampler, or
    DistributedSampler under torchrun): it shuffles and augments with the main process's generators,
    which the checkpoint restores too, and keeps the numbers of earlier runs (the shipped demo's).
    `with_index`: each batch is (images, labels, indices) (`Indexed`).
    """
    if with_index:
        dataset = Indexed(dataset)
    if workers > 0:
        sampler = EpochSampler(dataset, seed, rank, world)
        # the loader draws its workers' base seed from this generator, not from the main process's
        generator = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(EpochSamples(dataset, seed), batch_size=batch_size, sampler=sampler,
                                             num_workers=workers, pin_memory=pin_memory, persistent_workers=True,
                                             generator=generator)
        return loader, sampler
    sampler = None
    if world > 1:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                                         num_workers=0, pin_memory=pin_memory)
    return loader, sampler


def labels_of(dataset):
    """The labels of every image, in order, without reading the images (None where the set does not hold them)."""
    for attribute in ('targets', 'labels'):  # torchvision's MNIST, CIFAR10, ImageFolder; SVHN
        values = getattr(dataset, attribute, None)
        if values is not None:
            return [int(v) for v in values]
    return None
