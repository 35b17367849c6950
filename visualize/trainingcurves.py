"""Training curves from a run's `log.jsonl`, for one run or several side by side.

    python visualize/trainingcurves.py CKPT_A/log.jsonl CKPT_B/log.jsonl --labels A B --matdirs MAT_A MAT_B --out figs/runs

writes PREFIX.png and PREFIX.pdf: one panel per quantity the logs hold (classification and robustness
loss, accuracy of the noisy training copies, learning rate, lambda, the weights' and gradients'
norms, the share of points MACER's hinge keeps) against the epoch, one line per run, and, where a
run's `--matdir` is given, the certified ACR of each certified epoch (hard mode, from EPOCH.json).

Needs numpy and matplotlib only; reads result files, never the model or training code.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from argtypes import HelpFormatter, Parser  # noqa: E402
from common import UsageError, output_folder, run_command  # noqa: E402
from plotcurves import STYLES, write_figure  # noqa: E402

# (key in log.jsonl, panel title, log-scale y axis)
QUANTITIES = (('classification', 'classification loss', True),
              ('robustness', 'robustness loss', False),
              ('train_acc_noise', 'accuracy of the noisy copies', False),
              ('lr', 'learning rate', True),
              ('lambda', 'lambda', False),
              ('weight_norm', 'weight norm ||w||', False),
              ('grad_norm', 'gradient norm (mean per step)', True),
              ('hinge_kept', 'share kept by the hinge', False),
              ('epsilon', 'SmoothAdv epsilon', False))


def read_log(path):
    """The records of a log.jsonl, in epoch order; a UsageError naming the line for anything else."""
    if not os.path.isfile(path):
        raise UsageError(f'{path} does not exist' if not os.path.exists(path) else f'{path} is not a file')
    records = []
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f'cannot read {path} ({getattr(e, "strerror", None) or "not text"})') from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
                raise ValueError
        except ValueError:
            raise UsageError(f'{path}, line {number}, is not a record of a training log (log.jsonl)') from None
        records.append(record)
    if not records:
        raise UsageError(f'{path} holds no epochs')
    return sorted(records, key=lambda r: r['epoch'])


def certified_acr(matdir):
    """{epoch: ACR} of the complete hard-mode certifications EPOCH.json in `matdir`."""
    if not os.path.isdir(matdir):
        raise UsageError(f'--matdirs: {matdir} is not a folder')
    out = {}
    for name in os.listdir(matdir):
        stem = name[:-len('.json')]
        if not (name.endswith('.json') and stem.isdigit()):
            continue
        try:
            with open(os.path.join(matdir, name)) as f:
                record = json.load(f)
            if record.get('status') == 'complete':
                out[int(stem)] = float(record['summary']['hard']['acr'])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a certification of this tool: left out of the figure
    return out


def _finite(values):
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else float('nan') for v in values]


def figure(labels, logs, acrs, title=None):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [(key, name, log_y) for key, name, log_y in QUANTITIES if any(key in r for log in logs for r in log)]
    if any(acrs):
        panels.append(('acr', 'certified ACR (hard)', False))
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, name, log_y) in zip(axes.flat, panels):
        for i, (label, log, acr) in enumerate(zip(labels, logs, acrs)):
            color, style = STYLES[i % len(STYLES)]
            if key == 'acr':
                if acr:
                    epochs = sorted(acr)
                    ax.plot(epochs, [acr[e] for e in epochs], marker='o', linestyle=style, color=color, label=label)
                continue
            points = [(r['epoch'], r[key]) for r in log if key in r]
            if points:
                ax.plot([p[0] for p in points], _finite([p[1] for p in points]), linestyle=style, color=color,
                        linewidth=1.8, label=label)
        ax.set_title(name, fontsize='medium')
        ax.set_xlabel('epoch')
        if log_y:
            ax.set_yscale('log')
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    axes.flat[0].legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def build_parser():
    p = Parser(description='Training curves (PREFIX.png, PREFIX.pdf) from the log.jsonl of one or more runs.',
               formatter_class=HelpFormatter)
    p.add_argument('logs', nargs='+', metavar='LOG', help='log.jsonl files (one per run, in its --ckptdir)')
    p.add_argument('--labels', nargs='+', default=None, help='one label per run (default: the folder names)')
    p.add_argument('--matdirs', nargs='+', default=None, metavar='MATDIR',
                   help='one --matdir per run (or - for none), to draw the certified ACR of the certified epochs')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--out', required=True, help='prefix of the output files')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def work():
        for flag in ('labels', 'matdirs'):
            given = getattr(args, flag)
            if given is not None and len(given) != len(args.logs):
                raise UsageError(f'{len(given)} --{flag} for {len(args.logs)} logs: give one per log')
        labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in args.logs]
        logs = [read_log(p) for p in args.logs]
        acrs = [certified_acr(m) if m != '-' else {} for m in (args.matdirs or ['-'] * len(logs))]
        output_folder(args.out)
        write_figure(os.path.abspath(args.out), figure(labels, logs, acrs, args.title), ('.png', '.pdf'))
    status = run_command(work, f'{args.out}.png and .pdf')
    if status == 0:
        print(f'wrote {args.out}.png, {args.out}.pdf')
    return status


if __name__ == '__main__':
    sys.exit(main())
