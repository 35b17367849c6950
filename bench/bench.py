"""Throughput of training and certification, beside the model's plain forward pass and the public code's way.

    python bench/bench.py                      # a quick table: LeNet, a few minutes on two CPU cores
    python bench/bench.py --full               # the table of bench/README.md: LeNet and ResNet-110, every setting
    python bench/bench.py --models lenet --settings fp32 bf16 --json bench.json

Every figure is the median over --repeats timed runs after --warmup untimed ones. Each row runs
in a fresh process (one row's allocations and thread pools do not slow the next), all rows in one
invocation, so ratios compare like with like. Rows:
- forward: the network alone on --certify_batch random images (inference mode): the ceiling of
  Monte-Carlo certification in that setting;
- certify: `Smooth` sampling one image in batches of --certify_batch (noise drawn and outputs
  tallied on the device), in noisy samples per second; "vs forward" divides it by the forward
  pass's throughput on the same number of samples, timed alternately with it in the same process
  (so that a shared host's drift cannot move the ratio);
- train-macer / train-gaussian / train-smoothadv: one optimiser step of `train.training_step` on
  --batch_size images, in noisy images per second (every noisy copy counted);
- setting `original`: the same work as the public MACER code does it (`bench/original.py`: fp32,
  eager, default memory format, host-side counting, `.item()` every step).
Settings: fp32 (the default path), cl (channels_last), bf16 (autocast), compile (torch.compile),
and their combinations joined by '+', e.g. bf16+cl.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import original  # noqa: E402
from model import ARCH_INPUT, build_model  # noqa: E402
from plumbing.devices import Runner, cpu_name, pick_device, speed_settings  # noqa: E402
from plumbing.errors import UsageError  # noqa: E402
from plumbing.flagtypes import HelpFormatter, Parser, nonneg_int, positive_int  # noqa: E402
from rs.core import Smooth  # noqa: E402
from train import optimizer_step, step_setup, training_step  # noqa: E402

NUM_CLASSES = {'lenet': 10, 'resnet110': 10, 'resnet50': 1000}
WHAT = ('forward', 'certify', 'train-macer', 'train-gaussian', 'train-smoothadv')


def timed(fn, repeats, warmup, device):
    """Median seconds of fn() over `repeats` runs after `warmup` untimed ones."""
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


def timed_pair(fa, fb, repeats, warmup, device):
    """Median seconds of fa() and of fb(), timed alternately: a drift in the machine's speed (a shared
    host) hits both alike, so their ratio holds even when the absolute figures wander."""
    ta, tb = [], []
    for i in range(warmup + repeats):
        a = timed(fa, 1, 0, device)
        b = timed(fb, 1, 0, device)
        if i >= warmup:
            ta.append(a)
            tb.append(b)
    return statistics.median(ta), statistics.median(tb)


def runner_for(model, setting, device):
    parts = set(setting.split('+'))
    unknown = parts - {'fp32', 'bf16', 'fp16', 'cl', 'compile'}
    if unknown:
        raise SystemExit(f'unknown setting part(s) {", ".join(sorted(unknown))} in {setting!r}')
    precision = 'bf16' if 'bf16' in parts else 'fp16' if 'fp16' in parts else 'fp32'
    return Runner(model, device, precision, 'channels_last' if 'cl' in parts else 'contiguous', 'compile' in parts)


def measure(name, what, setting, args, device):
    """(value, unit) of one row; a fresh model each time, so settings do not leak into each other."""
    torch.manual_seed(0)
    shape, C = ARCH_INPUT[name], NUM_CLASSES[name]
    model = build_model(name, C).to(device)
    rep, warm = args.repeats, args.warmup
    if what in ('forward', 'certify'):
        model.eval()
        x = torch.rand(*shape, device=device)
        samples = max(args.certify_samples or 4 * args.certify_batch, args.certify_batch)
        samples -= samples % args.certify_batch  # whole batches, as the forward rows run them
        # the public code runs its model under no_grad, eagerly, in fp32; the fast path under inference_mode
        net, context = ((model, torch.no_grad) if setting == 'original'
                        else (runner_for(model, setting, device).eval(), torch.inference_mode))
        batch = torch.rand(args.certify_batch, *shape, device=device)

        def forward():
            with context():
                for _ in range(samples // args.certify_batch):
                    net(batch)
        if what == 'forward':
            return samples / timed(forward, rep, warm, device), 'images/s'
        if setting == 'original':
            def certify():
                original.sample_noise(model, x, samples, args.certify_batch, 0.25, C)
        else:
            smooth = Smooth(net, C, 0.25, device, mode='hard')

            def certify():
                smooth.tally(x, samples, args.certify_batch)
        t_forward, t_certify = timed_pair(forward, certify, rep, warm, device)
        return samples / t_certify, 'noisy samples/s', t_forward / t_certify

    method = what[len('train-'):]
    k = {'macer': args.gauss_num, 'gaussian': 1, 'smoothadv': args.num_noise_vec}[method]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(args.batch_size, *shape, device=device)
    y = torch.randint(0, C, (args.batch_size,), device=device)
    model.train()
    copies = args.batch_size * k
    if setting == 'original':
        if method == 'macer':
            fn = (lambda: original.macer_step(model, optimizer, x, y, sigma=0.25, lbd=12.0, gauss_num=k, beta=16.0,
                                              gamma=8.0, num_classes=C))
        elif method == 'gaussian':
            fn = (lambda: original.gaussian_step(model, optimizer, x, y, sigma=0.25))
        else:
            return None, 'noisy images/s'  # the public MACER code has no SmoothAdv
        return copies / timed(fn, rep, warm, device), 'noisy images/s'
    runner = runner_for(model, setting, device).train()
    flags = {'macer': dict(gauss_num=k, lbd=12.0, gamma=8.0, beta=16.0), 'gaussian': dict(gauss_num=k),
             'smoothadv': dict(num_noise_vec=k, epsilon=0.5, num_steps=args.num_steps)}[method]
    step = step_setup(method, 0.25, **flags)
    scaler = torch.amp.GradScaler(device.type, enabled='fp16' in setting)

    def fn():
        optimizer_step(optimizer, scaler, training_step(runner, x, y, *step).loss)
    return copies / timed(fn, rep, warm, device), 'noisy images/s'


def run_row(name, what, setting, argv):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, '--row', name, what, setting],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f'{name} {what} {setting} failed:\n{out.stderr}')
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result['value'], result['unit'], result.get('vs_forward')


# the quick default (a few minutes on two CPU cores) and the full table of bench/README.md (--full)
QUICK = dict(models=['lenet'], what=['forward', 'certify', 'train-macer'], settings=['original', 'cl'], repeats=3,
             warmup=1)
FULL = dict(models=['lenet', 'resnet110'], what=list(WHAT), settings=['original', 'fp32', 'cl', 'bf16', 'bf16+cl'],
            repeats=5, warmup=3)


def build_parser():
    p = Parser(description=__doc__.split('\n')[0] + ' By default a quick table (LeNet; forward, certification '
                           'and MACER training; the public code\'s way and the default setting; a few minutes on two '
                           'CPU cores); --full gives the table of bench/README.md.', formatter_class=HelpFormatter)
    p.add_argument('--full', action='store_true',
                   help=f'the full table: models {" ".join(FULL["models"])}, every measurement, settings '
                        f'{" ".join(FULL["settings"])}, {FULL["repeats"]} repeats after {FULL["warmup"]} warm-up runs')
    p.add_argument('--models', nargs='+', default=None, choices=sorted(ARCH_INPUT),
                   help=f'architectures to time (default: {" ".join(QUICK["models"])}; --full: '
                        f'{" ".join(FULL["models"])})')
    p.add_argument('--what', nargs='+', default=None, choices=WHAT,
                   help=f'measurements (default: {" ".join(QUICK["what"])}; --full: all)')
    p.add_argument('--settings', nargs='+', default=None,
                   help='original (the public code\'s way), or fp32 / bf16 / fp16 with cl (channels_last) and compile '
                        f'joined by + (default: {" ".join(QUICK["settings"])}; --full: {" ".join(FULL["settings"])})')
    p.add_argument('--device', default='auto', help='auto (CUDA when present, else CPU), cpu, cuda or cuda:N')
    p.add_argument('--certify_batch', type=positive_int, default=1000, help='noisy samples per forward pass')
    p.add_argument('--certify_samples', type=positive_int, default=None,
                   help='samples per timed certification run (default: 4 batches)')
    p.add_argument('--batch_size', type=positive_int, default=64, help='training images per step')
    p.add_argument('--gauss_num', type=positive_int, default=16, help='MACER k, noisy copies per image')
    p.add_argument('--num_noise_vec', type=positive_int, default=2, help='SmoothAdv m, noise draws per image')
    p.add_argument('--num_steps', type=positive_int, default=10, help='SmoothAdv PGD steps T')
    p.add_argument('--repeats', type=positive_int, default=None,
                   help=f'timed runs per row, the median is kept (default: {QUICK["repeats"]}; --full: '
                        f'{FULL["repeats"]})')
    p.add_argument('--warmup', type=nonneg_int, default=None,
                   help=f'untimed runs before them (default: {QUICK["warmup"]}; --full: {FULL["warmup"]})')
    p.add_argument('--json', default=None, help='also write the results to this file')
    p.add_argument('--row', nargs=3, default=None, metavar=('MODEL', 'WHAT', 'SETTING'), help=argparse.SUPPRESS)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in (FULL if args.full else QUICK).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        device = pick_device(args.device)
    except UsageError as e:
        parser.error(str(e))  # one line, exit status 2, as every other bad value
    speed_settings(device)
    if args.row is not None:  # one measurement, in this (fresh) process
        value, unit, *ratio = measure(*args.row, args, device)
        print(json.dumps({'value': value, 'unit': unit, 'vs_forward': ratio[0] if ratio else None}))
        return
    info = {'device': str(device), 'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda'
            else (cpu_name() or platform.machine()), 'threads': torch.get_num_threads(),
            'torch': torch.__version__, 'repeats': args.repeats, 'warmup': args.warmup,
            'certify_batch': args.certify_batch, 'batch_size': args.batch_size, 'gauss_num': args.gauss_num,
            'num_noise_vec': args.num_noise_vec, 'num_steps': args.num_steps}
    todo = [(n, w, s) for n in args.models for w in args.what for s in args.settings]
    print(' '.join(f'{k}={v}' for k, v in info.items()), flush=True)
    print(f'{len(todo)} rows, each in a fresh process: {args.warmup} warm-up and {args.repeats} timed runs per row'
          f'{"" if args.full else " (--full for the whole table)"}', flush=True)
    print(f'{"model":10s} {"measurement":16s} {"setting":16s} {"value":>12s} {"unit":16s} {"vs original":>11s} '
          f'{"vs forward":>10s}', flush=True)
    rows = []
    row_argv = [a for a in argv if a != '--full'] + [f'--{k}={getattr(args, k)}' for k in ('repeats', 'warmup')]
    for i, (name, what, setting) in enumerate(todo, start=1):
        print(f'... timing row {i}/{len(todo)}: {name} {what} {setting}', file=sys.stderr, flush=True)
        value, unit, ratio = run_row(name, what, setting, row_argv)
        rows.append({'model': name, 'what': what, 'setting': setting, 'value': value, 'unit': unit,
                     'vs_forward': ratio})
        if value is None:
            continue
        base = next((r['value'] for r in rows if r['model'] == name and r['what'] == what
                     and r['setting'] == 'original' and r['value']), None)
        vs_orig = f'{value / base:.2f}x' if base and setting != 'original' else ''
        vs_fwd = f'{ratio:.3f}' if ratio is not None else ''
        print(f'{name:10s} {what:16s} {setting:16s} {value:12.1f} {unit:16s} {vs_orig:>11s} {vs_fwd:>10s}',
              flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'info': info, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    main()
