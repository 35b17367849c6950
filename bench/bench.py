"""Throughput of training and certification, beside the model's plain forward pass.

    python bench/bench.py                      # LeNet 28x28 and ResNet-110 32x32, every measurement
    python bench/bench.py --models lenet --what certify forward --json out.json

Each figure is the median over --repeats timed runs after --warmup untimed ones, with the same
inputs and the same precision (fp32, eager) for every row:
- forward: the model alone on a batch of --certify_batch random images (inference mode): the
  ceiling of Monte-Carlo certification;
- certify: `Smooth` sampling one image N times in batches of --certify_batch (noise drawn on the
  device, outputs tallied there), in noisy samples per second;
- train-<method>: one optimiser step of `train.training_step` on --batch_size images, in noisy
  images per second (every noisy copy counted; SmoothAdv's attack passes are its overhead).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import build_model  # noqa: E402
from rs.core import Smooth  # noqa: E402
from train import training_step  # noqa: E402

SHAPES = {'lenet': (1, 28, 28), 'resnet110': (3, 32, 32), 'resnet50': (3, 224, 224)}


def timed(fn, repeats, warmup, device):
    """Median seconds of fn() over `repeats` runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_forward(model, shape, batch, device, repeats, warmup):
    x = torch.rand(batch, *shape, device=device)

    def run():
        with torch.inference_mode():
            model(x)
    return batch / timed(run, repeats, warmup, device)


def bench_certify(model, shape, batch, samples, device, repeats, warmup):
    smooth = Smooth(model, 10, 0.25, device, mode='hard')
    x = torch.rand(*shape, device=device)
    return samples / timed(lambda: smooth._sample_noise(x, samples, batch), repeats, warmup, device)


def bench_train(model, shape, method, batch, device, repeats, warmup, k, m, steps):
    args = SimpleNamespace(method=method, sigma=0.25, lbd=12.0, lbd_after=0, gamma=8.0, beta=16.0, gauss_num=k,
                           num_noise_vec=m, epsilon=0.5, warmup=1, num_steps=steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    model.train()

    def run():
        loss = training_step(model, x, y, method=method, epoch=1, args=args)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    copies = batch * (m if method == 'smoothadv' else k)
    return copies / timed(run, repeats, warmup, device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--models', nargs='+', default=['lenet', 'resnet110'], choices=sorted(SHAPES))
    p.add_argument('--what', nargs='+', default=['forward', 'certify', 'train-macer', 'train-gaussian', 'train-smoothadv'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--certify_batch', type=int, default=1000, help='noisy samples per forward pass')
    p.add_argument('--certify_samples', type=int, default=None, help='samples per timed certification (default: 4 batches)')
    p.add_argument('--batch_size', type=int, default=64, help='training images per step')
    p.add_argument('--gauss_num', type=int, default=16, help='MACER k (Gaussian uses 1)')
    p.add_argument('--num_noise_vec', type=int, default=2, help='SmoothAdv m')
    p.add_argument('--num_steps', type=int, default=10, help='SmoothAdv PGD steps')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--json', default=None, help='also write the table here')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        model = build_model(name).to(device)
        shape = SHAPES[name]
        for what in args.what:
            model.eval()
            if what == 'forward':
                value = bench_forward(model, shape, args.certify_batch, device, args.repeats, args.warmup)
                unit = 'images/s'
            elif what == 'certify':
                samples = args.certify_samples or 4 * args.certify_batch
                value = bench_certify(model, shape, args.certify_batch, samples, device, args.repeats, args.warmup)
                unit = 'noisy samples/s'
            elif what.startswith('train-'):
                method = what[len('train-'):]
                k = args.gauss_num if method == 'macer' else 1
                value = bench_train(model, shape, method, args.batch_size, device, args.repeats, args.warmup, k,
                                    args.num_noise_vec, args.num_steps)
                unit = 'noisy images/s'
            else:
                p.error(f'unknown measurement {what}')
            rows.append({'model': name, 'what': what, 'value': value, 'unit': unit})
            print(f'{name:10s} {what:16s} {value:12.1f} {unit}', flush=True)
    info = {'device': str(device), 'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda'
            else platform.processor() or platform.machine(), 'threads': torch.get_num_threads(),
            'precision': 'fp32', 'torch': torch.__version__, 'repeats': args.repeats, 'warmup': args.warmup,
            'certify_batch': args.certify_batch, 'batch_size': args.batch_size, 'gauss_num': args.gauss_num,
            'num_noise_vec': args.num_noise_vec, 'num_steps': args.num_steps}
    print(json.dumps(info))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'info': info, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    main()
