"""Certified-accuracy curves and tables from result files: this project's `.mat` and the community's TSV logs.

    python visualize/plotcurves.py MAT/440.mat cohen.tsv salman.tsv --labels MACER Cohen Salman --out figs/cifar025

writes PREFIX.png and PREFIX.pdf (certified accuracy against L2 radius, one line per file, as the
MACER paper's Figure 1) and PREFIX.md, PREFIX.tex and PREFIX.csv (certified accuracy at a grid of
radii and the ACR, one row per file).

Semantics (PAPER.md section 6): a wrong or abstained image counts as radius 0, i.e. it is never
certified; a TSV row with `correct` 0 does not count whatever its radius; the certified accuracy at
r counts the radii >= r, so an image certified at exactly 0.5 counts at 0.5. The MACER authors'
`plotcurves.m` counts radii > r instead: at r = 0 it leaves out correct images of radius 0, and at
each grid radius the images certified at exactly that radius.

Needs numpy, scipy and matplotlib only: nothing here imports torch or the model and training code.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import UsageError  # noqa: E402
from rs.results import read_mat, tsv_radii  # noqa: E402
from rs.stats import GRID, acr, certified_accuracy  # noqa: E402

STYLES = [('tab:red', '-'), ('tab:blue', '--'), ('tab:purple', ':'), ('tab:green', '-.'), ('tab:orange', '-'),
          ('tab:brown', '--'), ('tab:gray', ':'), ('tab:olive', '-.')]


def load_radii(path, mode='hard'):
    """One file's radii in the MACER encoding (radius if certified correct, -1 otherwise)."""
    if not os.path.isfile(path):
        raise UsageError(f'{path} does not exist')
    if path.endswith('.mat'):
        by_mode = read_mat(path)
        if mode not in by_mode:
            raise UsageError(f'{path} has no {mode!r} results (it has {", ".join(by_mode)}); choose --mode '
                             f'{next(iter(by_mode))}')
        return by_mode[mode]
    return tsv_radii(path)


def table_rows(radii_list, grid=GRID):
    """Per file: certified accuracy at each radius of `grid`, then the ACR."""
    return [list(certified_accuracy(r, grid)) + [acr(r)] for r in radii_list]


def _best(rows):
    """Per column, the best value as printed (two decimals, three for the ACR); None where all are equal."""
    columns = [[round(v, 3 if j == len(rows[0]) - 1 else 2) for v in col] for j, col in enumerate(zip(*rows))]
    return [max(col) if len(set(col)) > 1 else None for col in columns]


def _fmt(value, j, last):
    return f'{value:.3f}' if j == last else f'{value:.2f}'


def write_tables(prefix, labels, rows, grid=GRID):
    last = len(grid)
    header = ['model'] + [f'{r:.2f}' for r in grid] + ['ACR']
    md = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    md += ['| ' + ' | '.join([label] + [_fmt(v, j, last) for j, v in enumerate(row)]) + ' |'
           for label, row in zip(labels, rows)]
    with open(prefix + '.md', 'w') as f:
        f.write('\n'.join(md) + '\n')

    best = _best(rows)
    tex = ['\\begin{tabular}{l' + 'c' * len(header[1:]) + '}', '\\hline',
           ' & '.join(['Model'] + [f'${r:.2f}$' for r in grid] + ['ACR']) + ' \\\\', '\\hline']
    for label, row in zip(labels, rows):
        cells = []
        for j, v in enumerate(row):
            text = _fmt(v, j, last)
            is_best = round(v, 3 if j == last else 2) == best[j]
            cells.append(f'\\textbf{{{text}}}' if is_best else text)
        tex.append(' & '.join([_tex_escape(label)] + cells) + ' \\\\')
    tex += ['\\hline', '\\end{tabular}']
    with open(prefix + '.tex', 'w') as f:
        f.write('\n'.join(tex) + '\n')

    with open(prefix + '.csv', 'w') as f:
        f.write(','.join(['label'] + [f'{r:g}' for r in grid] + ['ACR']) + '\n')
        for label, row in zip(labels, rows):
            f.write(','.join([_csv_escape(label)] + [repr(float(v)) for v in row]) + '\n')


def _tex_escape(text):
    return ''.join('\\' + c if c in '&%$#_{}' else c for c in text)


def _csv_escape(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def curve(radii, max_radius, points=1001):
    """Certified accuracy on a fine grid of radii in [0, max_radius]."""
    r = np.linspace(0.0, max_radius, points)
    return r, certified_accuracy(radii, r)


def plot(prefix, labels, radii_list, max_radius, title=None):
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (label, radii) in enumerate(zip(labels, radii_list)):
        color, style = STYLES[i % len(STYLES)]
        x, y = curve(radii, max_radius)
        ax.plot(x, y, linestyle=style, color=color, linewidth=2.5, label=label)
    ax.set_xlim(0, max_radius)
    ax.set_ylim(0, 1)
    ax.set_xlabel('$\\ell_2$ radius')
    ax.set_ylabel('Certified accuracy')
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(prefix + '.png', dpi=150)
    fig.savefig(prefix + '.pdf')
    plt.close(fig)


def build_parser():
    p = argparse.ArgumentParser(
        description='Certified-accuracy curves (PREFIX.png, PREFIX.pdf) and tables (PREFIX.md, .tex, .csv) from '
                    'MACER .mat files and community TSV logs (Cohen, Salman, this project).',
        epilog='Accuracy at r counts the certified-correct images with radius >= r (PAPER.md section 6); wrong or '
               'abstained images, and TSV rows with correct = 0 whatever their radius, never count. The MACER '
               'authors\' plotcurves.m counts radius > r, which leaves out correct images of radius exactly 0 at '
               'r = 0 and images certified exactly at a grid radius.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('files', nargs='+', metavar='FILE', help='.mat files (this project, the MACER code) or TSV logs')
    p.add_argument('--labels', nargs='+', default=None, help='one label per file (default: the file names)')
    p.add_argument('--mode', default='hard', choices=('hard', 'soft'), help='which results of a .mat file')
    p.add_argument('--max_radius', type=float, default=None,
                   help='right end of the curves (default: the largest radius, rounded up to 0.25)')
    p.add_argument('--grid', type=float, nargs='+', default=list(GRID), help='radii of the tables')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--out', required=True, help='prefix of the output files')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.labels is not None and len(args.labels) != len(args.files):
            raise UsageError(f'{len(args.labels)} labels for {len(args.files)} files: give one label per file')
        labels = args.labels or [os.path.splitext(os.path.basename(f))[0] for f in args.files]
        radii_list = [load_radii(f, args.mode) for f in args.files]
        empty = [f for f, r in zip(args.files, radii_list) if r.size == 0]
        if empty:
            raise UsageError(f'{empty[0]} holds no results')
        if args.max_radius is not None and not args.max_radius > 0:
            raise UsageError(f'--max_radius must be positive, got {args.max_radius}')
        top = max(float(r.max()) for r in radii_list)
        max_radius = args.max_radius or max(0.25, np.ceil(top / 0.25) * 0.25)
        folder = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        rows = table_rows(radii_list, args.grid)
        write_tables(args.out, labels, rows, args.grid)
        plot(args.out, labels, radii_list, max_radius, args.title)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except OSError as e:
        print(f'error: cannot write {args.out}.*: {e.strerror}', file=sys.stderr)
        return 2
    with open(args.out + '.md') as f:
        print(f.read(), end='')
    print(f'wrote {", ".join(args.out + ext for ext in (".png", ".pdf", ".md", ".tex", ".csv"))}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
