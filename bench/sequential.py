"""Samples saved by sequential certification at fixed radii (`--radii`), against fixed-N CERTIFY on the same images.

    python bench/sequential.py                       # the table of bench/README.md: 4 settings, about 10 minutes
    python bench/sequential.py --num_img 30 --N 2000 # a quick look
    python bench/sequential.py --json seq.json

For each setting (a shipped `digits` checkpoint and the sigma it is certified at), the same test images are
certified twice with `main.py --task test`, in this process, one after the other: fixed-N CERTIFY (N0 + N
samples per image) and the sequential test at the radii of --radii with the same N0, N, alpha and seed. The
settings: the three shipped models at the sigma they were trained at (0.25: confident models, pA near 1 on
most images), and the shipped Gaussian model certified at sigma 1.00, four times the noise it was trained at:
a model weak on purpose, whose pA lies in between on most images (quartiles 0.66, 0.82, 0.92 over 60 images;
at sigma 0.50 they are still 0.96, 0.99, 1.00), where a fixed N is least wasted and the test's savings are
the smallest. Per setting it prints, at each radius of the grid, the certified accuracy of
both runs and their paired difference (the images certified by one run only; `rs.compare.paired_difference`,
the interval the comparison tools give, and the exact McNemar p-value), then the samples drawn per image and
the wall-time ratio. The grid's certified accuracy is the fixed run's share of images whose CERTIFY radius is
at least the grid radius and correct, and the sequential run's share certified at it.
"""
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main as entry  # noqa: E402
from plumbing.devices import cpu_name  # noqa: E402
from plumbing.flagtypes import HelpFormatter, Parser, nonneg_int, positive_int, probability, radius_type  # noqa: E402
from rs.compare import mcnemar_exact, paired_difference  # noqa: E402
from rs.results import parse_log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {  # name: (checkpoint, sigma)
    'gaussian': ('digits-gaussian-0.25.pth', 0.25),
    'macer': ('digits-macer-0.25.pth', 0.25),
    'smoothadv': ('digits-smoothadv-0.25.pth', 0.25),
    'gaussian@1.00': ('digits-gaussian-0.25.pth', 1.00),
}


def _rows(path):
    """{idx: (radius, correct)} of a hard-mode log (read as every tool reads one: `rs.results.parse_log`)."""
    with open(path) as f:
        return {r.idx: (r.radius, r.correct) for r in parse_log(f.read(), path)}


def _certify(folder, name, checkpoint, sigma, args, extra=()):
    argv = ['--task', 'test', '--dataset', 'digits', '--sigma', str(sigma), '--start_img', str(args.start_img),
            '--num_img', str(args.num_img), '--skip', str(args.skip), '--N0', str(args.N0), '--N', str(args.N),
            '--alpha', str(args.alpha), '--resume_ckpt', os.path.join(ROOT, 'checkpoints', checkpoint),
            '--matdir', folder, '--name', name, '--mode', 'hard', '--quiet', *extra]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the runs' own summaries: the table below says it all
        status = entry.main(argv)
    if status != 0:
        raise SystemExit(f'error: the certification {name} failed')
    seconds = time.perf_counter() - start
    with open(os.path.join(folder, f'{name}.json')) as f:
        record = json.load(f)
    return _rows(os.path.join(folder, f'{name}.hard.tsv')), record, seconds


def measure(setting, args, folder):
    checkpoint, sigma = SETTINGS[setting]
    fixed, fixed_record, fixed_s = _certify(folder, f'{setting}-fixed', checkpoint, sigma, args)
    seq, seq_record, seq_s = _certify(folder, f'{setting}-seq', checkpoint, sigma, args,
                                      ['--radii', *map(str, args.radii)])
    assert fixed.keys() == seq.keys()
    n = len(fixed)
    cells = []
    for r in (0.0, *args.radii):
        a = {i for i, (radius, correct) in fixed.items() if correct and radius >= r}
        b = {i for i, (radius, correct) in seq.items() if correct and radius >= r}
        d = paired_difference(len(b - a), len(a - b), n)
        cells.append({'radius': r, 'fixed': len(a) / n, 'sequential': len(b) / n, 'fixed_only': len(a - b),
                      'sequential_only': len(b - a), 'difference': d.value, 'low': d.low, 'high': d.high,
                      'mcnemar_p': mcnemar_exact(len(b - a), len(a - b))})
    fixed_samples = fixed_record['samples']['total'] / n
    seq_samples = seq_record['samples']['total'] / n
    return {'setting': setting, 'checkpoint': checkpoint, 'sigma': sigma, 'images': n, 'radii': cells,
            'samples_per_image': {'fixed': fixed_samples, 'sequential': seq_samples},
            'sample_ratio': fixed_samples / seq_samples, 'seconds': {'fixed': fixed_s, 'sequential': seq_s},
            'wall_ratio': fixed_s / seq_s}


def report(m):
    lines = [f'{m["setting"]} ({m["checkpoint"]} at sigma {m["sigma"]:g}, {m["images"]} images)',
             '| radius | fixed-N CERTIFY | sequential | fixed only / sequential only | sequential - fixed (95% interval) '
             '| McNemar p |', '|---|---|---|---|---|---|']
    for c in m['radii']:
        lines.append(f'| {c["radius"]:g} | {c["fixed"]:.3f} | {c["sequential"]:.3f} | {c["fixed_only"]} / '
                     f'{c["sequential_only"]} | {c["difference"]:+.3f} [{c["low"]:+.3f}, {c["high"]:+.3f}] | '
                     f'{c["mcnemar_p"]:.3g} |')
    s, t = m['samples_per_image'], m['seconds']
    lines.append(f'samples per image: fixed {s["fixed"]:.0f}, sequential {s["sequential"]:.0f} '
                 f'({m["sample_ratio"]:.1f}x fewer); wall time: fixed {t["fixed"]:.1f} s, sequential '
                 f'{t["sequential"]:.1f} s ({m["wall_ratio"]:.1f}x)')
    return '\n'.join(lines)


def build_parser():
    p = Parser(description='Fixed-N CERTIFY against the sequential test at fixed radii, on the same images.',
               formatter_class=HelpFormatter)
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS),
                   help='which models (and sigma) to certify')
    p.add_argument('--radii', nargs='+', type=radius_type, default=[0.25, 0.5, 0.75, 1.0],
                   help='the grid of the sequential test')
    p.add_argument('--N0', type=positive_int, default=100, help='samples that choose the class')
    p.add_argument('--N', type=positive_int, default=10000, help='samples that bound its probability (fixed run)')
    p.add_argument('--alpha', type=probability, default=0.001, help='each certificate\'s error probability')
    p.add_argument('--num_img', type=positive_int, default=100, help='test images')
    p.add_argument("--start_img", type=nonneg_int, default=0, help='first test image')
    p.add_argument('--skip', type=positive_int, default=3, help='every skip-th test image')
    p.add_argument('--json', default=None, help='also write the measurements to this JSON file')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import torch
    print(f'# {cpu_name()}, {torch.get_num_threads()} threads, PyTorch {torch.__version__}, Python '
          f'{platform.python_version()}; N0 {args.N0}, N {args.N}, alpha {args.alpha:g}, grid '
          f'{", ".join(f"{r:g}" for r in args.radii)}', flush=True)
    out = []
    with tempfile.TemporaryDirectory(prefix='macer-bench-seq-') as folder:
        for setting in args.settings:
            m = measure(setting, args, folder)
            print(report(m) + '\n', flush=True)
            out.append(m)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'cpu': cpu_name(), 'torch': torch.__version__, 'args': vars(args), 'settings': out}, f,
                      indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
