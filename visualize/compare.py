"""Is one model better than another on these test images? The paired comparison of certification runs.

    python visualize/compare.py MAT/macer.json MAT/gaussian.json --labels MACER Gaussian --out figs/compare
    python visualize/compare.py cohen-cifar10-0.25.tsv salman-cifar10-0.25.tsv --labels Cohen Salman --out figs/c

Reads two or more runs on the same test images: this project's NAME.json, NAME.MODE.tsv or NAME.mat (each
checked as a resume checks it), a recomputation's PREFIX.json, or TSV logs of other tools (Cohen's,
Salman's; they hold the image indices, and are labelled unchecked). Runs on other images are refused,
naming the first difference (`--shared` compares them on the images they all certified, and says how
many); so are runs whose certificates were made with other settings (sigma, N0, N, alpha, bound, mode:
`--other_settings` compares them anyway, and the table prints each run's settings and says which differ).

Each run is compared with a reference run (`--reference`, default the first; `--all_pairs` compares every
pair). For each pair (A, B) and each radius of the grid at which either certifies an image: both certified
accuracies with their exact intervals, the difference A - B with an interval that keeps its level (exact
Clopper-Pearson on the discordant images, `rs.compare.paired_difference`), the images only A and only B
certify, and the exact McNemar p-value on those; then the ACR difference and, where both runs keep
statistics, the difference in accuracy under noise, each with the number of images whose values differ,
an exact sign-flip p-value and a betting interval valid for any distribution (`rs.compare`). Every p-value
is also given adjusted by Holm's method over all of them. Per run: the ACR and the accuracy under noise
with their intervals; from the statistics, the distribution of the lower confidence bound on the
probability of the label (docs/METHOD.md, "Comparing models"). Where no honest interval exists (too few
images, every value equal) the table says n/a and why.

Writes PREFIX.md, PREFIX.tex, PREFIX.csv and the figure PREFIX.png, PREFIX.pdf as one set: all new, or all
as they were.

Needs numpy, scipy and matplotlib only: nothing here imports torch or the model and training code.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plotcurves import STYLES, _csv_escape, _tex_escape, check_typesettable, run_and_report, write_figure  # noqa: E402
from plumbing.errors import UsageError  # noqa: E402
from plumbing.files import same_file  # noqa: E402
from plumbing.flagtypes import HelpFormatter, Parser, level_type, nonneg_float  # noqa: E402
from plumbing.outputs import output_folder  # noqa: E402
from rs.compare import LEVEL, SEED, SIGN_FLIP_DRAWS, compare_pair, format_level, holm, resamples_for, \
    run_summary  # noqa: E402
from rs.runs import read_run, same_images  # noqa: E402
from rs.stats import GRID  # noqa: E402

OUTPUTS = ('.md', '.tex', '.csv', '.png', '.pdf')
# the settings two runs' certificates must share to be compared (`--other_settings` allows others)
SETTINGS = ('sigma', 'N0', 'N', 'alpha', 'bound', 'mode')


def describe_images(idx):
    """'100 test images (0, 10, ..., 990)' for an evenly spaced set, else their number and range."""
    idx = np.asarray(idx)
    if idx.size >= 3 and len(set(np.diff(idx).tolist())) == 1:
        return f'{idx.size} test images ({idx[0]}, {idx[1]}, ..., {idx[-1]})'
    if idx.size <= 3:
        return f'{idx.size} test image{"s" * (idx.size > 1)} ({", ".join(map(str, idx))})'
    return f'{idx.size} test images ({idx[0]} to {idx[-1]}, not evenly spaced)'


def _setting(value):
    return '-' if value is None else f'{value:g}' if isinstance(value, float) else str(value)


def check_settings(runs, paths, labels, other_settings):
    """Refuse runs whose certificates were made with other settings (SETTINGS: their radii and ACRs measure
    other things), unless `other_settings`; the notes for the table (naming runs by their labels): which
    settings differ, and which runs record none (unchecked logs)."""
    notes = []
    recorded = [(run, path, label) for run, path, label in zip(runs, paths, labels) if run.sigma is not None]
    # a setting a run does not record (an older recomputation's N0) is not held against it
    differ = [k for k in SETTINGS if len({run.settings()[k] for run, _, _ in recorded} - {None}) > 1]
    if differ:
        k = differ[0]
        a, pa, _ = next(r for r in recorded if r[0].settings()[k] is not None)
        b, pb, _ = next(r for r in recorded if r[0].settings()[k] not in (None, a.settings()[k]))
        if not other_settings:
            raise UsageError(f'{pa} was certified at {k} {_setting(a.settings()[k])} and {pb} at {k} '
                             f'{_setting(b.settings()[k])}: their certificates measure other things; compare runs '
                             f'made with the same sigma, N0, N, alpha, bound and mode, or pass --other_settings to '
                             f'compare them anyway (the table then says which differ)')
        notes.append(f'The runs were certified with other settings (--other_settings): {", ".join(differ)} differ; '
                     f'each run\'s are in the first table.')
    unknown = [label for run, label in zip(runs, labels) if run.sigma is None]
    if unknown:
        notes.append(f'Unchecked: {", ".join(unknown)} (a log without this tool\'s record): sigma, N0, N, alpha and '
                     f'bound are not recorded, so they were not checked against the other runs\'.')
    return notes


def read_runs(files, mode=None):
    """The runs of `files` (`rs.runs.read_run`, each checked as a resume checks it), all of one mode: the mode
    given, else each file's own, which must then agree. A run given twice, by the same file or by two of its
    files (NAME.json and NAME.hard.tsv, say), is refused: compared with itself it shows nothing."""
    runs = [read_run(f, mode) for f in files]
    for k, run in enumerate(runs):
        if run.idx is None:
            raise UsageError(f'{files[k]} holds no image indices, so its images cannot be matched with another run\'s; '
                             f'give its NAME.json or TSV log')
        earlier = next((j for j in range(k) if runs[j].key == run.key), None)
        if earlier is not None:
            what = (f'is given twice (as {files[earlier]} too)' if same_file(files[k], files[earlier]) else
                    f'is the same run as {files[earlier]} (another of its files, or a copy)')
            raise UsageError(f'{files[k]} {what}: a run compared with itself shows nothing; give each run once')
    modes = {run.mode for run in runs}
    if len(modes) > 1:
        hard = next(f for f, r in zip(files, runs) if r.mode == 'hard')
        soft = next(f for f, r in zip(files, runs) if r.mode == 'soft')
        raise UsageError(f'{hard} holds hard certificates and {soft} soft ones: hard and soft radii of one model '
                         f'differ by construction; compare runs of one mode (--mode hard or --mode soft)')
    return runs


def pairs_of(count, reference=0, all_pairs=False):
    """The pairs compared: each run with the reference (reference first), or every pair."""
    if all_pairs:
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    return [(reference, j) for j in range(count) if j != reference]


def comparison(runs, grid=GRID, level=LEVEL, pairs=None):
    """{'summaries': per run (`run_summary`), 'pairs': [(i, j, rows of `compare_pair`)], 'holm': the Holm-adjusted
    p-values of every row that has a p-value, in order}."""
    pairs = pairs_of(len(runs)) if pairs is None else pairs
    summaries = [run_summary(r.radii, grid, level, r.noise) for r in runs]
    compared = [(i, j, compare_pair(runs[i], runs[j], grid, level)) for i, j in pairs]
    p = [row['p'] for _, _, rows in compared for row in rows if row['p'] is not None]
    return {'summaries': summaries, 'pairs': compared, 'holm': list(holm(p))}


def _p(p):
    return f'{p:.3f}' if p >= 0.001 else f'{p:.1e}'


def _value(statistic, v):
    return f'{v:.2f}' if statistic == 'certified accuracy' else f'{v:.3f}'


def _signed(statistic, v):
    return ('+' if v >= 0 else '-') + _value(statistic, abs(v))


def _with_interval(statistic, e, signed=False):
    """'0.75 [0.71, 0.79]', or 'n/a (why)' where the estimate has no interval."""
    fmt = _signed if signed else _value
    if e.low is None:
        return f'{fmt(statistic, e.value)} [n/a: {e.why}]'
    return f'{fmt(statistic, e.value)} [{fmt(statistic, e.low)}, {fmt(statistic, e.high)}]'


def _at(row):
    return f'r = {row["radius"]:.2f}' if row['statistic'] == 'certified accuracy' else row['statistic']


def _rows(labels, result):
    """The paired rows with their Holm-adjusted p-values: [(label A, label B, row, p Holm or None)]."""
    adjusted = iter(result['holm'])
    return [(labels[i], labels[j], row, next(adjusted) if row['p'] is not None else None)
            for i, j, rows in result['pairs'] for row in rows]


def _differ(row):
    if row['statistic'] == 'certified accuracy':
        return f'{row["a_only"]} / {row["b_only"]}'
    return str(row['differ'])


def notes(runs, result, level, images_note, setting_notes):
    """The lines under the tables: what the intervals cover, what the tests are, and what was not checked."""
    tests = len(result['holm'])
    resamples = resamples_for(level)
    lines = [f'Intervals ({format_level(level)}) over the choice of the test images from the same test distribution, '
             f'not the certificates\' alpha, which covers the noise: certified accuracy Clopper-Pearson (exact); its '
             f'difference exact (Clopper-Pearson on the share of images one run alone certifies and on the share of '
             f'those A certifies, Bonferroni); ACR and accuracy under noise of a run BCa bootstrap over the images '
             f'({resamples} resamples at the least, seed {SEED}); their differences a betting interval, valid for any '
             f'distribution of the per-image differences (Waudby-Smith and Ramdas 2024).',
             f'differ: at a radius, the images only A / only B certifies; for ACR and accuracy under noise, the '
             f'images whose values differ. p: exact McNemar test on the images only one of the two runs certifies; '
             f'for ACR and accuracy under noise the sign-flip test of the per-image differences (exact up to 20 '
             f'differing images, else {SIGN_FLIP_DRAWS} draws, seed {SEED}), a test of "the two runs are '
             f'interchangeable on every image"; p Holm: adjusted over the {tests} p-values of this table. Radii at '
             f'which no run certifies an image are left out.']
    if images_note:
        lines.append(images_note + '.')
    lines += setting_notes
    lines += [n for r in runs for n in r.notes]
    return lines


def tables(labels, runs, result, level=LEVEL, images_note='', setting_notes=()):
    """{'.md', '.tex', '.csv'}: per run (its settings and how it was checked), then per pair and statistic
    (docs/METHOD.md, "Comparing models")."""
    lines = notes(runs, result, level, images_note, setting_notes)
    heading = f'Runs compared on the same {describe_images(runs[0].idx)}, {runs[0].mode} certificates.'
    name = format_level(level)
    run_cells = []
    for label, run, s in zip(labels, runs, result['summaries']):
        settings = run.settings()
        run_cells.append([label, run.checked] + [_setting(settings[k]) for k in SETTINGS] +
                         [_with_interval('ACR', s['acr']),
                          '-' if s['noise'] is None else _with_interval('noise', s['noise'])])
    run_header = ['run', 'checked', *SETTINGS, f'ACR [{name} interval]', f'accuracy under noise [{name} interval]']
    pair_header = ['A vs B', 'at', f'A [{name}]', f'B [{name}]', f'A - B [{name} interval]', 'differ', 'p', 'p Holm']
    pair_cells = []
    for a, b, row, p_holm in _rows(labels, result):
        st = row['statistic']
        pair_cells.append([f'{a} vs {b}', _at(row), _with_interval(st, row['a']), _with_interval(st, row['b']),
                           _with_interval(st, row['difference'], signed=True), _differ(row), _p(row['p']),
                           _p(p_holm)])

    def md_table(header, cells):
        return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + \
            ['| ' + ' | '.join(c) + ' |' for c in cells]
    md = [heading, ''] + md_table(run_header, run_cells) + [''] + md_table(pair_header, pair_cells) + [''] + lines

    def tex_table(header, cells):
        return ['\\begin{tabular}{l' + 'c' * (len(header) - 1) + '}', '\\hline',
                ' & '.join(_tex_escape(h) for h in header) + ' \\\\', '\\hline'] + \
            [' & '.join(_tex_escape(c) for c in row) + ' \\\\' for row in cells] + ['\\hline', '\\end{tabular}']
    tex = ['% ' + heading] + tex_table(run_header, run_cells) + ['', '\\medskip', ''] + \
        tex_table(pair_header, pair_cells) + ['\\par{\\footnotesize ' + _tex_escape(' '.join(lines)) + '}']

    def number(v):
        return '' if v is None else repr(float(v))
    csv = ['a,b,statistic,radius,a_value,a_low,a_high,b_value,b_low,b_high,difference,difference_low,'
           'difference_high,newcombe_low,newcombe_high,only_a,only_b,differ,p,p_holm,images,level,no_interval']
    for a, b, row, p_holm in _rows(labels, result):
        values = [_csv_escape(a), _csv_escape(b), row['statistic'], number(row['radius'])]
        values += [number(v) for v in (*row['a'], *row['b'], *row['difference'])]
        newcombe = row.get('newcombe')
        values += [number(newcombe.low), number(newcombe.high)] if newcombe is not None else ['', '']
        values += ['' if row[k] is None else str(row[k]) for k in ('a_only', 'b_only', 'differ')]
        values += [repr(float(row['p'])), number(p_holm), str(runs[0].radii.size), repr(level)]
        why = '; '.join(f'{k}: {e.why}' for k in ('a', 'b', 'difference') if (e := row[k]).why)
        values.append(_csv_escape(why))
        csv.append(','.join(values))
    return {'.md': '\n'.join(md) + '\n', '.tex': '\n'.join(tex) + '\n', '.csv': '\n'.join(csv) + '\n'}


def _bars(ax, x, estimates, color, label, marker='o', horizontal=False):
    """Estimates with their intervals as error bars; one without an interval is drawn as a hollow point."""
    values = np.array([e.value for e in estimates], dtype=np.float64)
    has = np.array([e.low is not None for e in estimates])
    low = np.array([e.low if e.low is not None else e.value for e in estimates], dtype=np.float64)
    high = np.array([e.high if e.high is not None else e.value for e in estimates], dtype=np.float64)
    err = [values - low, high - values]
    x = np.asarray(x, dtype=np.float64)
    args = (values, x) if horizontal else (x, values)
    kwargs = {'xerr' if horizontal else 'yerr': err}
    ax.errorbar(*args, **kwargs, fmt=marker, color=color, capsize=3, markersize=4, label=label)
    if (~has).any():
        hollow = (values[~has], x[~has]) if horizontal else (x[~has], values[~has])
        ax.plot(*hollow, marker, markerfacecolor='white', color=color, markersize=6)


def figure(labels, runs, result, level=LEVEL, title=None):
    """The differences with their intervals (certified accuracy at each radius; ACR) and, where runs keep their
    statistics, the distribution of 1 - the lower bound on the probability of the label (log scale: the images
    near 1 are where the runs differ), with the line at 1/2. Sized for the number of pairs and runs: legends
    outside the axes, one line per pair label, so no text covers another."""
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed
    import matplotlib.pyplot as plt
    with_bounds = [(k, label, run) for k, (label, run) in enumerate(zip(labels, runs)) if run.bound is not None]
    pairs = result['pairs']
    panels = 3 if with_bounds else 2
    height = max(4.4, 2.6 + 0.32 * len(pairs))
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, height), layout='constrained',
                             gridspec_kw={'width_ratios': [3, 2, 3][:panels]})
    pair_names = [f'{labels[i]} - {labels[j]}' for i, j, _ in pairs]
    radii = [row['radius'] for _, _, rows in pairs for row in rows if row['radius'] is not None]
    spread = 0.5 * (min(np.diff(sorted(set(radii)))) if len(set(radii)) > 1 else 0.25) / max(len(pairs), 1)
    ax = axes[0]
    for k, ((i, j, rows), name) in enumerate(zip(pairs, pair_names)):
        color, _ = STYLES[k % len(STYLES)]
        acc = [row for row in rows if row['statistic'] == 'certified accuracy']
        x = np.array([row['radius'] for row in acc]) + (k - (len(pairs) - 1) / 2) * spread
        # past the eight colours, another marker: no two pairs look the same
        _bars(ax, x, [row['difference'] for row in acc], color, name, marker='os^D'[k // len(STYLES) % 4])
    ax.axhline(0.0, color='black', linewidth=0.8)
    ax.set_xlabel('$\\ell_2$ radius')
    ax.set_ylabel('difference in certified accuracy')
    ax.set_title('certified accuracy, A - B', fontsize='medium')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small', loc='upper center', bbox_to_anchor=(0.5, -0.14), ncol=min(len(pairs), 2),
              frameon=False)  # below the axes: inside, it would hide the bars
    ax = axes[1]
    for k, (i, j, rows) in enumerate(pairs):
        color, _ = STYLES[k % len(STYLES)]
        _bars(ax, [k], [next(row['difference'] for row in rows if row['statistic'] == 'ACR')], color, None,
              marker='os^D'[k // len(STYLES) % 4], horizontal=True)
    ax.axvline(0.0, color='black', linewidth=0.8)
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels(pair_names, fontsize='small' if len(pairs) <= 6 else 'x-small')
    ax.set_ylim(len(pairs) - 0.5, -0.5)
    ax.set_xlabel('difference in ACR')
    ax.set_title('ACR, A - B', fontsize='medium')
    ax.grid(alpha=0.3)
    if with_bounds:
        ax = axes[2]
        smallest = 1.0
        for k, label, run in with_bounds:
            color, style = STYLES[k % len(STYLES)]
            gap = np.sort(1.0 - run.bound)  # 1 - pABar: small where the label is certain
            gap = np.clip(gap, 1e-12, 1.0)
            smallest = min(smallest, float(gap[0]))
            share = np.arange(1, gap.size + 1) / gap.size
            ax.step(np.concatenate([[gap[0]], gap]), np.concatenate([[0.0], share]), where='post', color=color,
                    linestyle=style, linewidth=2, label=label)
        ax.axvline(0.5, color='black', linestyle=(0, (1, 2)), linewidth=1.2)
        ax.set_xscale('log')
        ax.set_xlim(max(smallest / 2, 1e-12), 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel('1 - lower confidence bound on p(label)')
        ax.set_ylabel('share of images at or below')
        ax.set_title('left of 1/2: certified correct', fontsize='medium')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small', loc='upper center', bbox_to_anchor=(0.5, -0.14), ncol=min(len(with_bounds), 3),
                  frameon=False)
    if title:
        fig.suptitle(title, fontsize='medium')
    fig.get_layout_engine().set(h_pad=0.1)
    return fig


def figure_texts(fig):
    """The texts a reader sees on a drawn figure: titles, axis labels, the tick labels inside each axis' view,
    legend entries and the figure's own texts."""
    fig.canvas.draw()
    texts = [t for t in fig.texts]
    if getattr(fig, '_suptitle', None) is not None:
        texts.append(fig._suptitle)
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if low - 1e-12 * abs(high - low) <= tick.get_loc() <= high + 1e-12 * abs(high - low):
                    texts.append(tick.label1)
        legend = ax.get_legend()
        if legend is not None:
            texts += list(legend.get_texts())
    unique = list({id(t): t for t in texts}.values())
    return [t for t in unique if t.get_visible() and t.get_text().strip()]


def text_overlaps(fig):
    """The pairs of visible texts of a drawn figure whose boxes overlap, and the texts that leave the figure: for
    the test that a figure of many runs stays legible. [(text, other text or 'outside')]."""
    renderer = fig.canvas.get_renderer()
    boxes = [(t, t.get_window_extent(renderer)) for t in figure_texts(fig)]
    page = fig.bbox
    out = []
    for k, (t, b) in enumerate(boxes):
        if b.x0 < page.x0 - 1 or b.y0 < page.y0 - 1 or b.x1 > page.x1 + 1 or b.y1 > page.y1 + 1:
            out.append((t.get_text(), 'outside'))
        for u, c in boxes[k + 1:]:
            if b.x0 < c.x1 - 1 and c.x0 < b.x1 - 1 and b.y0 < c.y1 - 1 and c.y0 < b.y1 - 1:
                out.append((t.get_text(), u.get_text()))
    return out


def build_parser():
    p = Parser(
        description='The paired comparison of certification runs on the same test images: differences in certified '
                    'accuracy and ACR with intervals that keep their level, exact McNemar and sign-flip tests, and the '
                    'distribution of the bound on pA (PREFIX.md, .tex, .csv, .png, .pdf).',
        epilog='Intervals cover the choice of the test images, not the certificates\' alpha (docs/METHOD.md, '
               '"Comparing models").', formatter_class=HelpFormatter)
    p.add_argument('files', nargs='+', metavar='FILE',
                   help='two or more runs: this project\'s NAME.json, NAME.MODE.tsv or NAME.mat, a recomputation\'s '
                        'PREFIX.json, or TSV logs of other tools (they hold image indices)')
    p.add_argument('--labels', nargs='+', default=None, help='one label per file (default: the file names)')
    p.add_argument('--mode', default=None, choices=('hard', 'soft'),
                   help='which certificates: of a run of both modes, and of every run (default: each file\'s own, hard '
                        'for a run of both; the runs must agree)')
    p.add_argument('--grid', type=nonneg_float, nargs='+', default=list(GRID),
                   help='radii of the table (sorted, each once)')
    p.add_argument('--level', type=level_type, default=LEVEL,
                   help='confidence level of every interval, strictly between 0.5 and 1')
    p.add_argument('--reference', default=None, metavar='LABEL',
                   help='the run every other is compared with, by its label (default: the first run)')
    p.add_argument('--all_pairs', action='store_true', help='compare every pair of runs instead (n (n - 1) / 2)')
    p.add_argument('--shared', action='store_true',
                   help='compare runs on other images on the images they all certified (default: refuse them)')
    p.add_argument('--other_settings', '--other_sigma', dest='other_settings', action='store_true',
                   help='compare runs certified with other sigma, N0, N, alpha, bound or mode (default: refuse them)')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--out', required=True, help='prefix of the output files')
    p.add_argument('--overwrite', action='store_true',
                   help='replace files at the output paths that this tool did not write (never an input)')
    return p


def grid_of(values):
    """The grid sorted, each radius once (a radius given twice would count twice in Holm's correction)."""
    return sorted(set(float(v) for v in values))


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        if len(args.files) < 2:
            raise UsageError(f'{len(args.files)} file: a comparison needs two or more runs')
        if args.labels is not None and len(args.labels) != len(args.files):
            raise UsageError(f'{len(args.labels)} labels for {len(args.files)} files: give one label per file')
        labels = args.labels or [os.path.basename(f) for f in args.files]
        reference = 0
        if args.reference is not None:
            if args.all_pairs:
                raise UsageError('--reference and --all_pairs: choose one (every run against one, or every pair)')
            if args.reference not in labels:
                raise UsageError(f'--reference {args.reference!r} is none of the runs\' labels ({", ".join(labels)})')
            reference = labels.index(args.reference)
        runs = read_runs(args.files, args.mode)
        if len(set(labels)) < len(labels):
            raise UsageError(f'the label {next(x for x in labels if labels.count(x) > 1)!r} is given to two runs: '
                             f'give each run its own --labels')
        setting_notes = check_settings(runs, args.files, labels, args.other_settings)
        runs, images_note = same_images(runs, args.files, args.shared, labels)
        result = comparison(runs, grid_of(args.grid), args.level, pairs_of(len(runs), reference, args.all_pairs))
        output_folder(args.out)
        done['tables'] = tables(labels, runs, result, args.level, images_note, setting_notes)
        check_typesettable(labels + [args.title or ''])
        fig = figure(labels, runs, result, args.level, args.title)
        write_figure(os.path.abspath(args.out), fig, OUTPUTS, f'{args.out}.*', done['tables'],
                     inputs=[p for r in runs for p in r.reads], overwrite=args.overwrite)
    return run_and_report(work, args.out, done, OUTPUTS)


if __name__ == '__main__':
    sys.exit(main())
