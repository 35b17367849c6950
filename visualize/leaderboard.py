"""Where does a run stand in the field? A run among every published model of its data set and sigma, image by image.

    python visualize/leaderboard.py MAT/gaussian-0.25.json --out figs/board
    python visualize/leaderboard.py --dataset cifar10 --sigma 0.25 --out figs/cifar10-0.25

The published models are the certification logs shipped in reproduce/published/ (each checked against the SHA-256
its manifest records): Cohen's and Salman's Cifar-10 logs (every 20th test image) and the seven methods' logs of
alinlab/smoothing-catrs on every test image of Cifar-10, Fashion-MNIST and MNIST. The run (NAME.json, NAME.MODE.tsv,
or a TSV log of another tool with --dataset and --sigma) is checked as every reader checks it.

Each section is one protocol: MACER's table (test images 500 to 999), Cohen's and Salman's (every 20th image), the
full test set, each where the run holds all its images, and else the run's own images. In each: every model's
certified accuracy at the table's radii (Clopper-Pearson) and ACR (BCa), then the run against each published model
with the paired tests of compare.py (exact paired difference and McNemar per radius; betting interval and sign-flip
test for ACR; Holm over the section). Without a run: the published table on each protocol.

Writes PREFIX.md, PREFIX.tex, PREFIX.csv, PREFIX.png and PREFIX.pdf as one set. Needs numpy, scipy and matplotlib.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare import _csv_escape, _tex_escape, _with_interval, check_settings, comparison, describe_images, \
    grid_of, notes as pair_notes, pairs_of, tables as pair_tables  # noqa: E402
from plotcurves import STYLES, check_typesettable, run_and_report, write_figure  # noqa: E402
from plumbing.errors import UsageError  # noqa: E402
from plumbing.flagtypes import HelpFormatter, Parser, level_type, nonneg_float, positive_float  # noqa: E402
from plumbing.outputs import output_folder  # noqa: E402
from rs.compare import LEVEL, Estimate, format_level  # noqa: E402
from rs.runs import read_run, same_images  # noqa: E402
from rs.stats import GRID  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = (os.path.join(ROOT, 'reproduce', 'published'), os.path.join(ROOT, 'reproduce', 'published', 'catrs'))
OUTPUTS = ('.md', '.tex', '.csv', '.png', '.pdf')
TEST_SIZE = {'cifar10': 10000, 'fashion_mnist': 10000, 'mnist': 10000, 'imagenet': 50000}
METHOD_LABELS = {'gaussian': 'Gaussian', 'smoothadv': 'SmoothAdv', 'macer': 'MACER', 'stability': 'Stability',
                 'consistency': 'Consistency', 'smoothmix': 'SmoothMix', 'catrs': 'CAT-RS'}
PROTOCOLS = ('macer', 'cohen', 'full')
RUN_LABEL = 'this run'


def protocol_images(protocol, dataset):
    """The test images of a protocol: MACER's table 500..999, Cohen's and Salman's every (size / 500)-th, all."""
    size = TEST_SIZE[dataset]
    if protocol == 'macer':
        return np.arange(500, 1000), 'MACER\'s table (test images 500 to 999)'
    if protocol == 'cohen':
        return np.arange(0, size, size // 500), f'Cohen\'s and Salman\'s (every {size // 500}th test image)'
    return np.arange(size), 'the full test set'


def published_models(dataset, sigma, folders=PUBLISHED):
    """[(label, path, entry)] of every published log of `dataset` at `sigma` that a manifest in `folders` lists."""
    found = []
    for folder in folders:
        manifest = os.path.join(folder, 'manifest.json')
        if not os.path.isfile(manifest):
            continue
        with open(manifest) as f:
            logs = json.load(f).get('logs', [])
        for e in logs:
            if e.get('dataset') == dataset and abs(float(e.get('sigma', -1)) - sigma) < 1e-9:
                label = METHOD_LABELS.get(e['method'], e['method'])
                if 'authors' in e:  # Cohen's and Salman's own logs, beside the same methods' CAT-RS logs
                    label = f'{label} ({e["authors"]})'
                found.append((label, os.path.join(folder, e['file']), e))
    return found


def _available(folders=PUBLISHED):
    have = set()
    for folder in folders:
        manifest = os.path.join(folder, 'manifest.json')
        if os.path.isfile(manifest):
            with open(manifest) as f:
                have |= {(e['dataset'], float(e['sigma'])) for e in json.load(f).get('logs', [])}
    return ', '.join(f'{d} {s:g}' for d, s in sorted(have))


def sections(run, dataset, protocols):
    """[(protocol, images, description)]: each protocol of `protocols` the run covers whole (all, without a run),
    and the run's own images where it covers none of them; a protocol asked for by name that the run does not
    cover is refused, naming an image it lacks."""
    out = []
    for p in protocols:
        idx, what = protocol_images(p, dataset)
        if run is not None and not np.isin(idx, run.idx).all():
            continue
        out.append((p, idx, what))
    if run is not None and not any(np.array_equal(idx, run.idx) for _, idx, _ in out):
        out.append(('run', run.idx, 'the run\'s own images'))
    return out


def board_rows(labels, result, grid):
    """The leaderboard cells: per model, certified accuracy at each radius of `grid` with its interval, and ACR."""
    rows = []
    for label, s in zip(labels, result['summaries']):
        cells = [label]
        for k in range(len(grid)):
            cells.append(_with_interval('certified accuracy', Estimate(float(s['accuracy'][k]),
                                                                        float(s['accuracy_low'][k]),
                                                                        float(s['accuracy_high'][k]))))
        cells.append(_with_interval('ACR', s['acr']))
        rows.append(cells)
    return rows


def build(run, run_path, run_label, dataset, sigma, grid, level, protocols, other_settings, folders=PUBLISHED):
    """The sections' results and the texts: ({'.md', '.tex', '.csv'}, [(description, labels, runs, result)],
    every file read)."""
    models = published_models(dataset, sigma, folders)
    if not models:
        raise UsageError(f'no published model of {dataset} at sigma {sigma:g}; published: {_available(folders)}')
    published = [read_run(path) for _, path, _ in models]
    labels = [label for label, _, _ in models]
    paths = [path for _, path, _ in models]
    reads = [p for r in published for p in r.reads]
    setting_notes = []
    if run is not None:
        if run.idx.size and int(run.idx.max()) >= TEST_SIZE[dataset]:
            raise UsageError(f'{run_path} holds test image {int(run.idx.max())}, but {dataset}\'s test set has '
                             f'{TEST_SIZE[dataset]} images: it is not a run on {dataset}\'s test set')
        setting_notes = check_settings([run] + published, [run_path] + paths, [run_label] + labels, other_settings)
        reads += list(run.reads)
    # radii at which no model certifies any image are left out, as compare.py does
    top = max(float(np.max(r.radii)) for r in published + ([run] if run is not None else []))
    grid = [r for r in grid if r <= top] or list(grid[:1])
    done = []
    for protocol, idx, what in sections(run, dataset, protocols):
        chosen = [(label, path, r) for label, path, r in zip(labels, paths, published) if np.isin(idx, r.idx).all()]
        if not chosen:
            continue
        runs = [r.restricted(idx) for _, _, r in chosen]
        names = [path for _, path, _ in chosen]
        section_labels = [label for label, _, _ in chosen]
        if run is not None:
            runs = [run.restricted(np.intersect1d(run.idx, idx))] + runs
            names, section_labels = [run_path] + names, [run_label] + section_labels
        runs, _ = same_images(runs, names, shared=False, labels=section_labels)
        pairs = pairs_of(len(runs)) if run is not None else []
        result = comparison(runs, grid, level, pairs)
        done.append((protocol, what, section_labels, runs, result))
    if not done:
        raise UsageError(f'no published model of {dataset} at sigma {sigma:g} holds every image of {run_path}: '
                         f'certify images of a protocol (e.g. --start_img 500 --num_img 500 --skip 1)')
    return texts(done, grid, level, setting_notes, dataset, sigma), done, reads, grid


def texts(done, grid, level, setting_notes, dataset, sigma):
    name = format_level(level)
    header = ['model'] + [f'r = {r:.2f}' for r in grid] + ['ACR']
    md, tex = [], []
    csv = ['protocol,model,statistic,radius,value,low,high,images,level']
    for protocol, what, labels, runs, result in done:
        heading = (f'{what}: {describe_images(runs[0].idx)} of {dataset}, sigma {sigma:g}, {runs[0].mode} '
                   f'certificates; certified accuracy and ACR with {name} intervals over the test images.')
        rows = board_rows(labels, result, grid)
        md += [f'## {heading}', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        md += ['| ' + ' | '.join(r) + ' |' for r in rows] + ['']
        tex += ['% ' + heading, '\\begin{tabular}{l' + 'c' * (len(header) - 1) + '}', '\\hline',
                ' & '.join(_tex_escape(h) for h in header) + ' \\\\', '\\hline']
        tex += [' & '.join(_tex_escape(c) for c in r) + ' \\\\' for r in rows] + ['\\hline', '\\end{tabular}', '']
        for label, s in zip(labels, result['summaries']):
            for k, r in enumerate(grid):
                csv.append(','.join([protocol, _csv_escape(label), 'certified accuracy', repr(float(r)),
                                     *(repr(float(s[key][k])) for key in ('accuracy', 'accuracy_low', 'accuracy_high')),
                                     str(s['images']), repr(level)]))
            acr = s['acr']
            csv.append(','.join([protocol, _csv_escape(label), 'ACR', '', repr(float(acr.value)),
                                 '' if acr.low is None else repr(float(acr.low)),
                                 '' if acr.high is None else repr(float(acr.high)), str(s['images']), repr(level)]))
        if result['pairs']:
            paired = pair_tables(labels, runs, result, level, '', setting_notes)
            md += ['### The run against each published model', '', paired['.md']]
            tex += [paired['.tex']]
        else:
            md += [' '.join(pair_notes(runs, result, level, '', setting_notes)[:1]), '']
    caveat = ('Each section is its own family for Holm\'s correction; the sections share images, so they are not '
              'independent evidence, and a protocol chosen after looking at them is a choice no interval covers. '
              'Published logs are checked against their manifest\'s SHA-256 (checked: published); they keep no '
              'counts, so their certificates cannot be recomputed. Models are listed in a fixed order, not ranked; radii at which no model certifies an image are left out.')
    md.append(caveat)
    tex.append('\\par{\\footnotesize ' + _tex_escape(caveat) + '}')
    return {'.md': '\n'.join(md) + '\n', '.tex': '\n'.join(tex) + '\n', '.csv': '\n'.join(csv) + '\n'}


def figure(done, grid, title=None, run_label=None):
    """One panel per section: each model's certified accuracy at the radii with its interval; the run in black."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(done), figsize=(5.4 * len(done), 5.2), layout='constrained', squeeze=False)
    # one colour, line and marker per model in every panel (past the eight colours, another marker)
    models = [m for m in dict.fromkeys(label for _, _, labels, _, _ in done for label in labels) if m != run_label]
    look = {m: (*STYLES[k % len(STYLES)], 'os^D'[k // len(STYLES) % 4]) for k, m in enumerate(models)}
    look[run_label] = ('black', '-', 'o')
    for ax, (protocol, what, labels, runs, result) in zip(axes[0], done):
        spread = 0.6 * (grid[1] - grid[0] if len(grid) > 1 else 0.25) / max(len(labels), 1)
        for k, (label, s) in enumerate(zip(labels, result['summaries'])):
            color, style, marker = look[label]
            x = np.asarray(grid) + (k - (len(labels) - 1) / 2) * spread
            acc = np.asarray(s['accuracy'])
            ax.errorbar(x, acc, yerr=[acc - s['accuracy_low'], s['accuracy_high'] - acc], color=color,
                        linestyle=style, marker=marker, markersize=3, capsize=2, linewidth=1.2, label=label)
        ax.set_title(f'{what}\n{runs[0].idx.size} images', fontsize='medium')
        ax.set_xlabel('$\\ell_2$ radius')
        ax.set_ylabel('certified accuracy')
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small', loc='upper center', bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    if title:
        fig.suptitle(title, fontsize='medium')
    return fig


def build_parser():
    p = Parser(description='A run among every published model of its data set and sigma, on the images they share '
                           '(PREFIX.md, .tex, .csv, .png, .pdf); without a run, the published table.',
               epilog='Intervals cover the choice of the test images, not the certificates\' alpha (docs/METHOD.md, '
                      '"Comparing models").', formatter_class=HelpFormatter)
    p.add_argument('file', nargs='?', default=None, metavar='FILE',
                   help='the run: NAME.json, NAME.MODE.tsv, or a TSV log of another tool (then give --dataset and '
                        '--sigma)')
    p.add_argument('--dataset', default=None, choices=sorted(TEST_SIZE),
                   help='data set (a run\'s record gives it; must agree)')
    p.add_argument('--sigma', type=positive_float, default=None, help='noise level (a run\'s record gives it)')
    p.add_argument('--label', default=RUN_LABEL, help='the run\'s name in the tables')
    p.add_argument('--mode', default=None, choices=('hard', 'soft'), help='which certificates of a run of both')
    p.add_argument('--protocols', nargs='+', choices=PROTOCOLS, default=list(PROTOCOLS),
                   help='the protocols to report, where the run holds their images')
    p.add_argument('--grid', type=nonneg_float, nargs='+', default=list(GRID), help='radii of the tables')
    p.add_argument('--level', type=level_type, default=LEVEL, help='confidence level, strictly between 0.5 and 1')
    p.add_argument('--other_settings', action='store_true',
                   help='compare a run certified with other N0, N, alpha, bound or mode (default: refuse it)')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--out', required=True, help='prefix of the output files')
    p.add_argument('--overwrite', action='store_true',
                   help='replace files at the output paths that this tool did not write (never an input)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        run, dataset, sigma = None, args.dataset, args.sigma
        if args.file is not None:
            run = read_run(args.file, args.mode)
            if run.idx is None:
                raise UsageError(f'{args.file} holds no image indices; give its NAME.json or TSV log')
            for what, given, recorded in (('dataset', dataset, run.dataset), ('sigma', sigma, run.sigma)):
                if given is not None and recorded is not None and given != recorded:
                    raise UsageError(f'--{what} {given} but {args.file} was certified at {what} {recorded}: leave '
                                     f'--{what} out, or give the run of {what} {given}')
            dataset, sigma = dataset or run.dataset, sigma or run.sigma
            if dataset is None or sigma is None:
                raise UsageError(f'{args.file} records no data set or sigma (a log without this tool\'s record): give '
                                 f'--dataset and --sigma')
            if dataset not in TEST_SIZE:
                raise UsageError(f'{args.file} is a run on {dataset}: no published model of {dataset}; published: '
                                 f'{_available()}')
            if args.label != RUN_LABEL and args.label in METHOD_LABELS.values():
                raise UsageError(f'--label {args.label!r} is a published model\'s name: choose another')
        elif dataset is None or sigma is None:
            raise UsageError('give a run, or --dataset and --sigma for the published table alone')
        grid = grid_of(args.grid)
        done['tables'], results, reads, grid = build(run, args.file, args.label, dataset, float(sigma), grid, args.level,
                                               args.protocols, args.other_settings)
        output_folder(args.out)
        check_typesettable([args.label, args.title or ''])
        fig = figure(results, grid, args.title, args.label if run is not None else None)
        write_figure(os.path.abspath(args.out), fig, OUTPUTS, f'{args.out}.*', done['tables'], inputs=reads,
                     overwrite=args.overwrite)
    return run_and_report(work, args.out, done, OUTPUTS)


if __name__ == '__main__':
    sys.exit(main())
