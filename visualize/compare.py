"""Is one model better than another on these test images? The paired comparison of certification runs.

    python visualize/compare.py MAT/macer.json MAT/gaussian.json --labels MACER Gaussian --out figs/compare
    python visualize/compare.py cohen-cifar10-0.25.tsv salman-cifar10-0.25.tsv --labels Cohen Salman --out figs/c

Reads two or more runs on the same test images: this project's NAME.json (with its log and statistics
beside it), TSV logs (Cohen's, Salman's, this project's; they hold the image indices) or a `.mat` with
its JSON beside it. Runs on other images are refused, naming the first difference (`--shared`
compares them on the images they all certified, and says how many); so are runs whose JSON records
another sigma (`--other_sigma` compares them anyway; the table prints each run's sigma). A log without
this project's JSON records no sigma: it is not checked, and the table says so.

For each pair of runs (A, B) and each radius of the grid at which either certifies an image: both
certified accuracies, the difference A - B with its interval over the test images (Newcombe's paired
score interval), the images only A and only B certify there, and the exact McNemar p-value on those;
then the ACR difference and, where both runs keep statistics, the difference in accuracy under noise,
each with a paired BCa bootstrap interval. The p-values are also given adjusted by Holm's method over
every p-value of the table. Per run: the ACR and the accuracy under noise with their intervals, and,
from the statistics, the distribution of the lower confidence bound on the probability of the label
(docs/METHOD.md, "Comparing models").

Writes PREFIX.md, PREFIX.tex, PREFIX.csv and the figure PREFIX.png, PREFIX.pdf (the differences with
their intervals, and the distribution of the bound) as one set: all new, or all as they were.

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
from plumbing.flagtypes import HelpFormatter, Parser, nonneg_float, probability  # noqa: E402
from plumbing.outputs import output_folder  # noqa: E402
from rs.compare import LEVEL, RESAMPLES, SEED, compare_pair, holm, run_summary  # noqa: E402
from rs.runs import read_run, same_images  # noqa: E402
from rs.stats import GRID  # noqa: E402

OUTPUTS = ('.md', '.tex', '.csv', '.png', '.pdf')


def describe_images(idx):
    """'100 test images (0, 10, ..., 990)' for an evenly spaced set, else their number and range."""
    idx = np.asarray(idx)
    if idx.size >= 3 and len(set(np.diff(idx).tolist())) == 1:
        return f'{idx.size} test images ({idx[0]}, {idx[1]}, ..., {idx[-1]})'
    if idx.size <= 3:
        return f'{idx.size} test image{"s" * (idx.size > 1)} ({", ".join(map(str, idx))})'
    return f'{idx.size} test images ({idx[0]} to {idx[-1]}, not evenly spaced)'


def check_sigmas(runs, paths, labels, other_sigma):
    """Refuse runs whose JSON records other sigmas (their radii are on other scales), unless `other_sigma`;
    the notes for the table (naming runs by their labels): what was not checked, and what was allowed."""
    known = {path: run.sigma for run, path in zip(runs, paths) if run.sigma is not None}
    notes = []
    if len(set(known.values())) > 1:
        a, sa = next(iter(known.items()))
        b, sb = next((n, s) for n, s in known.items() if s != sa)
        if not other_sigma:
            raise UsageError(f'{a} was certified at sigma {sa:g} and {b} at sigma {sb:g}: their radii and ACRs measure '
                             f'other things; compare runs of one sigma, or pass --other_sigma to compare them anyway '
                             f'(the table then prints each run\'s sigma)')
        notes.append('The runs were certified at other sigmas (--other_sigma): ' +
                     ', '.join(f'{label} {run.sigma:g}' for run, label in zip(runs, labels) if run.sigma is not None)
                     + '.')
    unknown = [label for run, label in zip(runs, labels) if run.sigma is None]
    if unknown:
        notes.append(f'Sigma, N and alpha are not recorded for {", ".join(unknown)} (a log without this tool\'s JSON): '
                     f'not checked.')
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


def comparison(runs, grid=GRID, level=LEVEL):
    """{'summaries': per run (`run_summary`), 'pairs': [(i, j, rows of `compare_pair`)], 'holm': the Holm-adjusted
    p-values of every row that has a p-value, in order}."""
    summaries = [run_summary(r.radii, grid, level, r.noise) for r in runs]
    pairs = [(i, j, compare_pair(runs[i], runs[j], grid, level))
             for i in range(len(runs)) for j in range(i + 1, len(runs))]
    p = [row['p'] for _, _, rows in pairs for row in rows if row['p'] is not None]
    return {'summaries': summaries, 'pairs': pairs, 'holm': list(holm(p))}


def _p(p):
    return f'{p:.3f}' if p >= 0.001 else f'{p:.1e}'


def _value(statistic, v):
    return f'{v:.2f}' if statistic == 'certified accuracy' else f'{v:.3f}'


def _signed(statistic, v):
    return ('+' if v >= 0 else '-') + _value(statistic, abs(v))


def _at(row):
    return f'r = {row["radius"]:.2f}' if row['statistic'] == 'certified accuracy' else row['statistic']


def _rows(labels, result):
    """The paired rows with their Holm-adjusted p-values: [(label A, label B, row, p Holm or None)]."""
    adjusted = iter(result['holm'])
    return [(labels[i], labels[j], row, next(adjusted) if row['p'] is not None else None)
            for i, j, rows in result['pairs'] for row in rows]


def notes(runs, result, level, images_note, sigma_notes):
    """The lines under the tables: what the intervals cover, what the tests are, and what was not checked."""
    tests = len(result['holm'])
    lines = [f'Intervals ({level:.0%}) over the choice of the test images from the same test distribution, not the '
             f'certificates\' alpha, which covers the noise: certified accuracy Clopper-Pearson (exact), its '
             f'difference Newcombe\'s paired score interval, ACR and accuracy under noise BCa bootstrap over the '
             f'images ({RESAMPLES} resamples, seed {SEED}; paired for a difference).',
             f'p: exact McNemar test on the images only one of the two runs certifies at that radius (only A, only B); '
             f'p Holm: adjusted over the {tests} p-values of this table. Radii at which no run certifies an image are '
             f'left out.']
    if images_note:
        lines.append(images_note + '.')
    lines += sigma_notes
    lines += [n for r in runs for n in r.notes]
    return lines


def tables(labels, runs, result, level=LEVEL, images_note='', sigma_notes=()):
    """{'.md', '.tex', '.csv'}: per run, then per pair and statistic (docs/METHOD.md, "Comparing models")."""
    lines = notes(runs, result, level, images_note, sigma_notes)
    heading = f'Runs compared on the same {describe_images(runs[0].idx)}, {runs[0].mode} certificates.'

    def known(v, fmt):
        return '-' if v is None else format(v, fmt)

    run_cells = []
    for label, run, s in zip(labels, runs, result['summaries']):
        noise = s['noise']
        run_cells.append([label, known(run.sigma, 'g'), known(run.N, 'd'), known(run.alpha, 'g'),
                          f'{s["acr"][0]:.3f} [{s["acr"][1]:.3f}, {s["acr"][2]:.3f}]',
                          '-' if noise is None else f'{noise[0]:.3f} [{noise[1]:.3f}, {noise[2]:.3f}]'])
    run_header = ['run', 'sigma', 'N', 'alpha', f'ACR [{level:.0%} interval]',
                  f'accuracy under noise [{level:.0%} interval]']
    pair_header = ['A vs B', 'at', 'A', 'B', f'A - B [{level:.0%} interval]', 'only A', 'only B', 'p', 'p Holm']
    pair_cells = []
    for a, b, row, p_holm in _rows(labels, result):
        st = row['statistic']
        d = row['difference']
        pair_cells.append([f'{a} vs {b}', _at(row), _value(st, row['a'][0]), _value(st, row['b'][0]),
                           f'{_signed(st, d[0])} [{_signed(st, d[1])}, {_signed(st, d[2])}]',
                           '' if row['a_only'] is None else str(row['a_only']),
                           '' if row['b_only'] is None else str(row['b_only']),
                           '' if row['p'] is None else _p(row['p']), '' if p_holm is None else _p(p_holm)])

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

    csv = ['a,b,statistic,radius,a_value,a_low,a_high,b_value,b_low,b_high,difference,difference_low,'
           'difference_high,only_a,only_b,p,p_holm,images,level']
    for a, b, row, p_holm in _rows(labels, result):
        values = [_csv_escape(a), _csv_escape(b), row['statistic'],
                  '' if row['radius'] is None else repr(row['radius'])]
        values += [repr(float(v)) for v in (*row['a'], *row['b'], *row['difference'])]
        values += ['' if row[k] is None else str(row[k]) for k in ('a_only', 'b_only')]
        values += ['' if row['p'] is None else repr(row['p']), '' if p_holm is None else repr(float(p_holm)),
                   str(runs[0].radii.size), repr(level)]
        csv.append(','.join(values))
    return {'.md': '\n'.join(md) + '\n', '.tex': '\n'.join(tex) + '\n', '.csv': '\n'.join(csv) + '\n'}


def figure(labels, runs, result, level=LEVEL, title=None):
    """The differences with their intervals (certified accuracy at each radius; ACR) and, where runs keep their
    statistics, the distribution of the lower bound on the probability of the label with the 1/2 line."""
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed
    import matplotlib.pyplot as plt
    with_bounds = [(label, run) for label, run in zip(labels, runs) if run.bound is not None]
    panels = 3 if with_bounds else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.4), gridspec_kw={'width_ratios': [3, 2, 3][:panels]})
    pairs = result['pairs']
    spread = 0.02 * max([row['radius'] for _, _, rows in pairs for row in rows if row['radius'] is not None] + [0.25])
    ax = axes[0]
    for k, (i, j, rows) in enumerate(pairs):
        color, _ = STYLES[k % len(STYLES)]
        acc = [row for row in rows if row['statistic'] == 'certified accuracy']
        x = np.array([row['radius'] for row in acc]) + (k - (len(pairs) - 1) / 2) * spread
        d = np.array([row['difference'] for row in acc]).reshape(-1, 3)
        ax.errorbar(x, d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], fmt='o', color=color, capsize=3,
                    markersize=4, label=f'{labels[i]} - {labels[j]}')
    ax.axhline(0.0, color='black', linewidth=0.8)
    ax.set_xlabel('$\\ell_2$ radius')
    ax.set_ylabel('difference in certified accuracy')
    ax.set_title('certified accuracy, A - B', fontsize='medium')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small', loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=min(len(pairs), 2),
              frameon=False)  # below the axes: inside, it would hide the bars
    ax = axes[1]
    for k, (i, j, rows) in enumerate(pairs):
        color, _ = STYLES[k % len(STYLES)]
        d = next(row['difference'] for row in rows if row['statistic'] == 'ACR')
        ax.errorbar([d[0]], [k], xerr=[[d[0] - d[1]], [d[2] - d[0]]], fmt='o', color=color, capsize=3)
    ax.axvline(0.0, color='black', linewidth=0.8)
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels([f'{labels[i]} -\n{labels[j]}' for i, j, _ in pairs], fontsize='small')
    ax.set_ylim(len(pairs) - 0.5, -0.5)
    ax.set_xlabel('difference in ACR')
    ax.set_title('ACR, A - B', fontsize='medium')
    ax.grid(alpha=0.3)
    if with_bounds:
        ax = axes[2]
        for k, (label, run) in enumerate(zip(labels, runs)):
            if run.bound is None:
                continue
            color, style = STYLES[k % len(STYLES)]
            x = np.sort(run.bound)
            share = np.arange(1, x.size + 1) / x.size
            ax.step(np.concatenate([[0.0], x, [1.0]]), np.concatenate([[0.0], share, [1.0]]), where='post',
                    color=color, linestyle=style, linewidth=2, label=label)
        ax.axvline(0.5, color='black', linestyle=(0, (1, 2)), linewidth=1.2)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel('lower confidence bound on p(label)')
        ax.set_ylabel('share of images at or below')
        ax.set_title('right of 1/2: certified correct', fontsize='medium')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small', loc='upper left')
    if title:
        fig.suptitle(title, fontsize='medium')
    fig.text(0.5, 0.01, f'Bars: {level:.0%} intervals over the choice of test images (not the certificates\' alpha). '
             f'Bound on p(label): pABar where the selected class is the label, 0 elsewhere.', ha='center',
             va='bottom', fontsize='x-small', wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def build_parser():
    p = Parser(
        description='The paired comparison of certification runs on the same test images: differences in certified '
                    'accuracy and ACR with their intervals over the images, exact McNemar tests, and the distribution '
                    'of the bound on pA (PREFIX.md, .tex, .csv, .png, .pdf).',
        epilog='Intervals cover the choice of the test images, not the certificates\' alpha (docs/METHOD.md, '
               '"Comparing models").', formatter_class=HelpFormatter)
    p.add_argument('files', nargs='+', metavar='FILE',
                   help='two or more runs: this project\'s NAME.json, TSV logs (they hold image indices), or a .mat '
                        'with its JSON beside it')
    p.add_argument('--labels', nargs='+', default=None, help='one label per file (default: the file names)')
    p.add_argument('--mode', default=None, choices=('hard', 'soft'),
                   help='which certificates: of a run of both modes, and of every run (default: each file\'s own, hard '
                        'for a run of both; the runs must agree)')
    p.add_argument('--grid', type=nonneg_float, nargs='+', default=list(GRID), help='radii of the table')
    p.add_argument('--level', type=probability, default=LEVEL, help='confidence level of every interval')
    p.add_argument('--shared', action='store_true',
                   help='compare runs on other images on the images they all certified (default: refuse them)')
    p.add_argument('--other_sigma', action='store_true',
                   help='compare runs certified at other sigmas (default: refuse them)')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--out', required=True, help='prefix of the output files')
    p.add_argument('--overwrite', action='store_true',
                   help='replace files at the output paths that this tool did not write (never an input)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        if len(args.files) < 2:
            raise UsageError(f'{len(args.files)} file: a comparison needs two or more runs')
        if args.labels is not None and len(args.labels) != len(args.files):
            raise UsageError(f'{len(args.labels)} labels for {len(args.files)} files: give one label per file')
        labels = args.labels or [os.path.basename(f) for f in args.files]
        runs = read_runs(args.files, args.mode)
        sigma_notes = check_sigmas(runs, args.files, labels, args.other_sigma)
        runs, images_note = same_images(runs, args.files, args.shared, labels)
        result = comparison(runs, args.grid, args.level)
        output_folder(args.out)
        done['tables'] = tables(labels, runs, result, args.level, images_note, sigma_notes)
        check_typesettable(labels + [args.title or ''])
        fig = figure(labels, runs, result, args.level, args.title)
        write_figure(os.path.abspath(args.out), fig, OUTPUTS, f'{args.out}.*', done['tables'],
                     inputs=[p for r in runs for p in r.reads], overwrite=args.overwrite)
    return run_and_report(work, args.out, done, OUTPUTS)


if __name__ == '__main__':
    sys.exit(main())
