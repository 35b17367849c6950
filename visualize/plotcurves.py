"""Certified-accuracy curves and tables from result files: this project's `.mat` and the community's TSV logs.

    python visualize/plotcurves.py MAT/440.mat cohen.tsv salman.tsv --labels MACER Cohen Salman --out figs/cifar025

writes PREFIX.png and PREFIX.pdf (certified accuracy against L2 radius, one line per file, as the
MACER paper's Figure 1) and PREFIX.md, PREFIX.tex and PREFIX.csv (certified accuracy at a grid of
radii and the ACR, one row per file): all five new, or all five as they were when anything fails.

Every number comes with its interval over the choice of test images (docs/METHOD.md, "Comparing
models"): the certified accuracy at each radius with the exact (Clopper-Pearson) interval, drawn as a
band around each curve; the ACR with a BCa bootstrap interval over the images (fixed seed); and,
where a file of this project keeps its statistics (NAME.stats.jsonl), the accuracy under noise with
its interval. `--level` sets the level (0.95); `--no_intervals` gives the paper's bare format.

Semantics (docs/METHOD.md, "Protocol and metrics"): a wrong or abstained image counts as radius 0, i.e. it is never
certified; a TSV row with `correct` 0 does not count whatever its radius; the certified accuracy at
r counts the radii >= r, so an image certified at exactly 0.5 counts at 0.5. The MACER authors'
`plotcurves.m` counts radii > r instead: at r = 0 it leaves out correct images of radius 0, and at
each grid radius the images certified at exactly that radius.

Where a file comes with this project's JSON (NAME.json beside NAME.mat or NAME.hard.tsv), the figure
marks the largest radius its N, alpha and sigma can certify, the vertical cliff every curve ends in.

Needs numpy, scipy and matplotlib only: nothing here imports torch or the model and training code.
"""
import os
import sys
import textwrap

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plumbing.errors import UsageError, first_line  # noqa: E402
from plumbing.flagtypes import HelpFormatter, Parser, level_type, nonneg_float, positive_float  # noqa: E402
from plumbing.outputs import output_folder, run_command, text_writer, write_together  # noqa: E402
from rs.compare import LEVEL, SEED, clopper_pearson, format_level, resamples_for, run_summary  # noqa: E402
from rs.runs import read_run  # noqa: E402
from rs.stats import GRID, acr, certified_accuracy, largest_radius  # noqa: E402

STYLES = [('tab:red', '-'), ('tab:blue', '--'), ('tab:purple', ':'), ('tab:green', '-.'), ('tab:orange', '-'),
          ('tab:brown', '--'), ('tab:gray', ':'), ('tab:olive', '-.')]
OUTPUTS = ('.png', '.pdf', '.md', '.tex', '.csv')


def load_run(path, mode=None, incomplete=False):
    """One file's results, checked as a resume checks them (`rs.runs.read_run`): radii in the MACER encoding
    (radius if certified correct, -1 otherwise) and what the file's record says."""
    return read_run(path, mode, incomplete)


def load_radii(path, mode=None):
    """One file's radii in the MACER encoding (`load_run`)."""
    return load_run(path, mode).radii


def run_record(run):
    """What this project's record of a run says of its certificates: {'N', 'alpha', 'sigma', 'mode'}; None for a
    file without one (Cohen's, Salman's logs, a MACER .mat)."""
    if run.sigma is None or run.N is None or run.alpha is None:
        return None
    return {'N': run.N, 'alpha': run.alpha, 'sigma': run.sigma, 'mode': run.mode}


def run_notes(labels, runs):
    """The lines under a table about its runs: an unfinished run (drawn with --incomplete), and the files that
    have no record of this tool, so nothing was checked against a run."""
    out = []
    for label, run in zip(labels, runs):
        if not run.complete:
            out.append(f'{label}: {run.radii.size} of the {run.expected} images of an unfinished run (--incomplete); '
                       f'its numbers will change')
        if run.checked == 'unchecked':
            out.append(f'{label}: unchecked ({os.path.basename(run.path)} has no record of this tool beside it)')
    return out


def table_rows(radii_list, grid=GRID):
    """Per file: certified accuracy at each radius of `grid`, then the ACR."""
    return [list(certified_accuracy(r, grid)) + [acr(r)] for r in radii_list]


def interval_rows(radii_list, noise_list, grid=GRID, level=LEVEL):
    """Per file, the intervals over its images: {'images', 'low', 'high' (certified accuracy at each radius of
    `grid`, Clopper-Pearson, then the ACR, BCa bootstrap), 'noise': (value, low, high) or None}."""
    out = []
    for radii, noise in zip(radii_list, noise_list):
        s = run_summary(radii, grid, level, noise)
        why = [f'ACR: {s["acr"].why}'] if s['acr'].why else []
        if s['noise'] is not None and s['noise'].why:
            why.append(f'accuracy under noise: {s["noise"].why}')
        out.append({'images': s['images'], 'low': list(s['accuracy_low']) + [s['acr'][1]],
                    'high': list(s['accuracy_high']) + [s['acr'][2]], 'noise': s['noise'], 'why': why})
    return out


def interval_note(intervals, level=LEVEL):
    """The line under a table with intervals: what they cover, and how they are computed."""
    images = sorted({i['images'] for i in intervals})
    counted = f'{images[0]} images' if len(images) == 1 else 'images: ' + ', '.join(str(i['images']) for i in intervals)
    return (f'Intervals ({format_level(level)}) over the choice of the test images from the same test distribution ({counted}), '
            f'not the certificates\' alpha, which covers the noise: certified accuracy Clopper-Pearson (exact), '
            f'ACR{" and accuracy under noise" if any(i["noise"] for i in intervals) else ""} BCa bootstrap over the '
            f'images ({resamples_for(level)} resamples at the least, more where an end lies far in a tail, seed {SEED}; n/a '
            f'where no interval is honest, with why).')


def _best(rows):
    """Per column, the best value as printed (two decimals, three for the ACR); None where all are equal."""
    columns = [[round(v, 3 if j == len(rows[0]) - 1 else 2) for v in col] for j, col in enumerate(zip(*rows))]
    return [max(col) if len(set(col)) > 1 else None for col in columns]


def _fmt(value, j, last):
    return f'{value:.3f}' if j == last else f'{value:.2f}'


def _span(low, high, j, last):
    return 'n/a' if low is None else f'[{_fmt(low, j, last)}, {_fmt(high, j, last)}]'


def tables(labels, rows, grid=GRID, intervals=None, level=LEVEL, notes=()):
    """{'.md': text, '.tex': text, '.csv': text}. With `intervals` (`interval_rows`), each model's row is followed
    by a row of its intervals, the accuracy under noise is a column where a file has it, the CSV gains the
    interval columns after the paper's, and a line under the table says what the intervals cover."""
    last = len(grid)
    noise = intervals is not None and any(i['noise'] for i in intervals)
    header = ['model'] + [f'{r:.2f}' for r in grid] + ['ACR'] + (['accuracy under noise'] if noise else [])
    md = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    tex_header = ['Model'] + [f'${r:.2f}$' for r in grid] + ['ACR'] + (['Acc. under noise'] if noise else [])
    best = _best(rows)
    tex = ['\\begin{tabular}{l' + 'c' * len(header[1:]) + '}', '\\hline', ' & '.join(tex_header) + ' \\\\', '\\hline']
    for k, (label, row) in enumerate(zip(labels, rows)):
        spans, extra, extra_span = [], [], []
        if intervals is not None:
            ends = zip(intervals[k]['low'], intervals[k]['high'])
            spans = [_span(lo, hi, j, last) for j, (lo, hi) in enumerate(ends)]
            if noise:
                n = intervals[k]['noise']
                extra, extra_span = ([f'{n[0]:.3f}'], [_span(n[1], n[2], last, last)]) if n else (['-'], [''])
        md.append('| ' + ' | '.join([label] + [_fmt(v, j, last) for j, v in enumerate(row)] + extra) + ' |')
        if intervals is not None:
            md.append('| ' + ' | '.join([f'{format_level(level)} interval'] + spans + extra_span) + ' |')
        cells = []
        for j, v in enumerate(row):
            text = _fmt(v, j, last)
            is_best = round(v, 3 if j == last else 2) == best[j]
            cells.append(f'\\textbf{{{text}}}' if is_best else text)
        tex.append(' & '.join([_tex_escape(label)] + cells + extra) + ' \\\\')
        if intervals is not None:
            tex.append(' & '.join(f'{{\\scriptsize {_tex_escape(t)}}}' if t else ''
                                  for t in [f'{format_level(level)} interval'] + spans + extra_span) + ' \\\\')
    tex += ['\\hline', '\\end{tabular}']

    csv_header = ['label'] + [f'{r:g}' for r in grid] + ['ACR']
    if intervals is not None:
        names = [f'{r:g}' for r in grid] + ['ACR']
        csv_header += ['images'] + [f'{name}_{end}' for name in names for end in ('low', 'high')]
        csv_header += ['noise_accuracy', 'noise_accuracy_low', 'noise_accuracy_high'] if noise else []
    csv = [','.join(csv_header)]
    for k, (label, row) in enumerate(zip(labels, rows)):
        values = [repr(float(v)) for v in row]
        if intervals is not None:
            values.append(str(intervals[k]['images']))
            values += ['' if v is None else repr(float(v))
                       for pair in zip(intervals[k]['low'], intervals[k]['high']) for v in pair]
            if noise:
                values += ['' if v is None else repr(float(v)) for v in intervals[k]['noise']] \
                    if intervals[k]['noise'] else ['', '', '']
        csv.append(','.join([_csv_escape(label)] + values))
    md_text, tex_text = '\n'.join(md) + '\n', '\n'.join(tex) + '\n'
    no_interval = [f'{label}: no interval for its {why}' for label, i in zip(labels, intervals or [])
                   for why in i.get('why', ())]
    below = list(notes) + no_interval + ([interval_note(intervals, level)] if intervals is not None else [])
    if below:
        md_text += '\n' + '\n'.join(below) + '\n'
        tex_text += '\\par{\\footnotesize ' + _tex_escape(' '.join(below)) + '}\n'
    return {'.md': md_text, '.tex': tex_text, '.csv': '\n'.join(csv) + '\n'}


def _tex_escape(text):
    return ''.join('\\' + c if c in '&%$#_{}' else c for c in text)


def _csv_escape(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def curve(radii, max_radius, points=1001):
    """Certified accuracy on a fine grid of radii in [0, max_radius]."""
    r = np.linspace(0.0, max_radius, points)
    return r, certified_accuracy(radii, r)


def band(radii, max_radius, level=LEVEL, points=1001):
    """The Clopper-Pearson interval of the certified accuracy on `curve`'s grid: (r, low, high)."""
    r, accuracy = curve(radii, max_radius, points)
    low, high = clopper_pearson(np.round(accuracy * radii.size), radii.size, level)
    return r, low, high


def figure(labels, radii_list, max_radius, title=None, ylim=(0.0, 1.0), cliffs=(), caption='', bands=None):
    """The curves as a matplotlib figure; `cliffs`: radii drawn as dotted vertical lines, which `caption`
    (printed under the axes, one line per line of text) explains; `bands`: per curve (r, low, high) shaded
    around it (`band`)."""
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, (label, radii) in enumerate(zip(labels, radii_list)):
        color, style = STYLES[i % len(STYLES)]
        x, y = curve(radii, max_radius)
        ax.plot(x, y, linestyle=style, color=color, linewidth=2.5, label=label)
        if bands is not None:
            ax.fill_between(*bands[i], color=color, alpha=0.15, linewidth=0)
    for radius in cliffs:
        ax.axvline(radius, color='black', linestyle=(0, (1, 2)), linewidth=1.2)
    ax.set_xlim(0, max_radius)
    ax.set_ylim(*ylim)
    ax.set_xlabel('$\\ell_2$ radius')
    ax.set_ylabel('Certified accuracy')
    if title:  # wrapped: a title from a script's arguments is often wider than the axes
        ax.set_title(textwrap.fill(title, 50), fontsize='medium')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
    if caption:
        fig.text(0.5, 0.01, caption, ha='center', va='bottom', fontsize='x-small', wrap=True)
        fig.tight_layout(rect=(0, 0.03 + 0.03 * (caption.count('\n') + 1), 1, 1))
    else:
        fig.tight_layout()
    return fig


def cliffs_of(records):
    """The largest radius the files' N, alpha and sigma can certify (where every curve drops to 0), from
    their JSON records: ([radius, ...] to mark, the caption that states them)."""
    by_setting = {}
    for record in records:
        if record is None:
            continue
        setting = (record['N'], record['alpha'], record['sigma'])
        r = largest_radius(record['sigma'], record['N'], record['alpha'], record['mode'])
        by_setting.setdefault(setting, {})[record['mode']] = r
    radii, parts = [], []
    for (N, alpha, sigma), by_mode in by_setting.items():
        radii += list(by_mode.values())
        values = ', '.join(f'{r:.2f} ({m})' for m, r in sorted(by_mode.items()))
        parts.append(f'N = {N}, \u03b1 = {alpha:g}, \u03c3 = {sigma:g}: {values}')
    caption = ('Dotted: the largest radius certifiable with ' + '; '.join(parts)) if parts else ''
    return sorted(set(radii)), caption


def check_typesettable(texts):
    """Refuse, before anything is drawn, a label or title that matplotlib cannot typeset: text between two dollar
    signs is read as TeX math, and a formula it cannot parse would fail the figure. Each text is drawn alone,
    so the error names it (and only a text's own fault is blamed on it)."""
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed
    import matplotlib.pyplot as plt
    for text in texts:
        if '$' not in text:
            continue
        fig = plt.figure(figsize=(1, 1))
        try:
            fig.text(0, 0, text)
            fig.canvas.draw()
        except ValueError as e:
            raise UsageError(f'cannot typeset {text!r} ({first_line(e)}): a label or --title with $...$ is read as '
                             f'TeX math; write \\$ for a dollar sign') from None
        finally:
            plt.close(fig)


def figure_writer(fig, fmt):
    """A `write(tmp_path)` for `plumbing.outputs.write_together` that saves `fig` in format `fmt` ('png', 'pdf'): given,
    since the temporary file's name ends in .tmp, from which savefig would pick no format."""
    def write(tmp):
        fig.savefig(tmp, format=fmt, dpi=150)
    return write


def write_figure(prefix, fig, extensions, what, texts=None, inputs=(), overwrite=False):
    """PREFIX + each extension: the figure in that format, or `texts[ext]`, written as one set
    (`plumbing.outputs.write_together`): all new, or all as they were (never new tables beside an older figure),
    never over one of `inputs` (the files the command read), and over an existing file only where it is an
    earlier output of this tool (or `overwrite`)."""
    import matplotlib.pyplot as plt
    texts = texts or {}
    try:
        write_together([(prefix + ext, text_writer(texts[ext]) if ext in texts else figure_writer(fig, ext[1:]))
                        for ext in extensions], what, inputs, overwrite)
    finally:
        plt.close(fig)


def run_and_report(work, out, done, outputs=OUTPUTS):
    """Run a table command's `work()`; on success print its Markdown table (`done['tables']['.md']`) and
    the files written (`outputs`, the extensions). Returns the exit status (plotcurves and compare share
    this ending)."""
    status = run_command(work, f'{out}.*')
    if status == 0:
        print(done['tables']['.md'], end='')
        print(f'wrote {", ".join(out + ext for ext in outputs)}')
    return status


def build_parser():
    p = Parser(
        description='Certified-accuracy curves (PREFIX.png, PREFIX.pdf) and tables (PREFIX.md, .tex, .csv) from '
                    'MACER .mat files and community TSV logs (Cohen, Salman, this project).',
        epilog='Accuracy at r counts the certified-correct images with radius >= r; wrong or abstained images, and '
               'TSV rows with correct = 0 whatever their radius, never count. The MACER authors\' plotcurves.m '
               'counts radius > r, which leaves out correct images of radius exactly 0 at r = 0 and images '
               'certified exactly at a grid radius.',
        formatter_class=HelpFormatter)
    p.add_argument('files', nargs='+', metavar='FILE', help='.mat files (this project, the MACER code) or TSV logs')
    p.add_argument('--labels', nargs='+', default=None, help='one label per file (default: the file names)')
    p.add_argument('--mode', default=None, choices=('hard', 'soft'),
                   help='which results of a run of both modes (default: each file\'s own, hard for a run of both)')
    p.add_argument('--max_radius', type=positive_float, default=None,
                   help='right end of the curves (default: the largest radius, rounded up to 0.25)')
    p.add_argument('--ylim', type=nonneg_float, nargs=2, default=None, metavar=('LOW', 'HIGH'),
                   help='the accuracy axis (default: 0 to 1); e.g. --ylim 0.6 1 to zoom where methods differ')
    p.add_argument('--grid', type=nonneg_float, nargs='+', default=list(GRID), help='radii of the tables')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--level', type=level_type, default=LEVEL,
                   help='confidence level of the intervals over the test images')
    p.add_argument('--no_intervals', action='store_true',
                   help='the paper\'s bare format: no intervals, no band, no accuracy under noise')
    p.add_argument('--incomplete', action='store_true',
                   help='draw a run that has not finished, on the images it holds (the figure and tables say so); '
                        'default: refuse it')
    p.add_argument('--out', required=True, help='prefix of the output files')
    p.add_argument('--overwrite', action='store_true',
                   help='replace files at the output paths that this tool did not write (never an input)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        if args.labels is not None and len(args.labels) != len(args.files):
            raise UsageError(f'{len(args.labels)} labels for {len(args.files)} files: give one label per file')
        if args.ylim is not None and not args.ylim[0] < args.ylim[1]:
            raise UsageError(f'--ylim {args.ylim[0]} {args.ylim[1]}: LOW must be below HIGH')
        labels = args.labels or [os.path.splitext(os.path.basename(f))[0] for f in args.files]
        args.grid = sorted(set(args.grid))  # each radius once, in order
        runs = [load_run(f, args.mode, args.incomplete) for f in args.files]
        radii_list = [r.radii for r in runs]
        top = max(float(r.max()) for r in radii_list)
        max_radius = args.max_radius or max(0.25, np.ceil(top / 0.25) * 0.25)
        output_folder(args.out)
        intervals = bands = None
        if not args.no_intervals:
            intervals = interval_rows(radii_list, [r.noise for r in runs], args.grid, args.level)
            bands = [band(r, max_radius, args.level) for r in radii_list]
        notes = run_notes(labels, runs)
        # the paper's bare format stays bare: its notes are printed instead
        done['tables'] = tables(labels, table_rows(radii_list, args.grid), args.grid, intervals, args.level,
                                () if args.no_intervals else notes)
        for note in notes if args.no_intervals else ():
            print(f'note: {note}')
        cliffs, caption = cliffs_of([run_record(r) for r in runs])
        if bands is not None:
            caption = '\n'.join(filter(None, [caption, f'Shaded: {format_level(args.level)} Clopper-Pearson intervals over the '
                                                        f'choice of test images (not the certificates\' alpha)']))
        caption = '\n'.join(filter(None, [caption] + [n for n in notes if 'unfinished' in n]))
        check_typesettable(labels + [args.title or ''])
        fig = figure(labels, radii_list, max_radius, args.title, tuple(args.ylim or (0.0, 1.0)),
                     [c for c in cliffs if c <= max_radius], caption, bands)
        write_figure(os.path.abspath(args.out), fig, OUTPUTS, f'{args.out}.*', done['tables'],
                     inputs=[p for r in runs for p in r.reads], overwrite=args.overwrite)
    return run_and_report(work, args.out, done)


if __name__ == '__main__':
    sys.exit(main())
