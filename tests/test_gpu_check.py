"""The CPU side of the GPU acceptance script (bench/gpu_check.py): its synthetic Cifar-shaped data read by
worker processes with augmentation, its fp32 check and its throughput helpers run here; the script's CUDA
checks run where a GPU is (bash bench/gpu_check.sh)."""
import os
import sys

import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'bench'))
import gpu_check  # noqa: E402


def test_synthetic_images_are_cifar_shaped_augmented_and_read_by_workers():
    train = gpu_check.SyntheticImages(12, 'train')
    assert len(train) == 12 and train.targets[:3] == [0, 1, 2]
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # the same seed gives the same images; augmentation (random crop with padding) makes zero borders
    assert (gpu_check.SyntheticImages(12, 'train').pixels == train.pixels).all()
    test = gpu_check.SyntheticImages(3, 'test')
    assert torch.equal(test[0][0], test[0][0])  # no augmentation on the test split


def test_fp32_check_and_speed_helpers_run_on_cpu():
    e32, _ = gpu_check.check_fp32(torch.device('cpu'), 'lenet', 4)
    assert e32 < 1e-4
    assert gpu_check.train_throughput(torch.device('cpu'), batch=2, k=2, steps=1, arch='lenet', warmup=1) > 0
    report = gpu_check.Report()
    report.add('PASS', 'a', 'x')
    report.add('SKIP', 'b', 'y')
    assert report.summary() == '1 passed, 0 failed, 1 skipped'
