"""Training curves from a run's `log.jsonl`, for one run or several side by side.

    python visualize/trainingcurves.py CKPT_A/log.jsonl CKPT_B/log.jsonl --labels A B --matdirs MAT_A MAT_B --out figs/runs

writes PREFIX.png and PREFIX.pdf: one panel per quantity the logs hold (classification and robustness
loss, accuracy of the noisy training copies, learning rate, lambda, the weights' and gradients'
norms, the share of points MACER's hinge keeps) against the epoch, one line per run, and, where a
run's `--matdir` is given, the certified ACR of each certified epoch (hard mode, from EPOCH.json).

Only the run's own certifications are drawn: a certification written during training records the
run that wrote it (`checkpoint: {epoch, run_id}`), and the run of a log is the one its folder's
checkpoint (latest.pth, else the last EPOCH.pth) names. Certifications of other runs, and those of
the run made with another sigma, N, alpha or set of test images than most of its others, are left
out with a note.

Needs numpy, scipy and matplotlib only; reads result files, never the model or training code (a checkpoint's
run identity is read from its pickle without importing torch or building any object).
"""
import collections
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plotcurves import STYLES, check_typesettable, write_figure  # noqa: E402
from plumbing.errors import UsageError  # noqa: E402
from plumbing.files import check_regular  # noqa: E402
from plumbing.flagtypes import HelpFormatter, Parser, level_type  # noqa: E402
from plumbing.outputs import output_folder, run_command  # noqa: E402
from plumbing.records import checkpoint_values, run_checkpoints, run_identity  # noqa: E402
from rs.compare import LEVEL, format_level  # noqa: E402
from rs.results import read_result_json  # noqa: E402
from rs.runs import read_run  # noqa: E402
from rs.stats import acr  # noqa: E402

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
            if not isinstance(record, dict) or not _is_epoch(record.get('epoch')):
                raise ValueError
        except ValueError:
            raise UsageError(f'{path}, line {number}, is not a record of a training log (log.jsonl)') from None
        records.append(record)
    if not records:
        raise UsageError(f'{path} holds no epochs')
    return sorted(records, key=lambda r: r['epoch'])


# an epoch a training log can hold: a whole number from 1 to 10^15, exact as a float (a 400-digit "epoch" is none)
MAX_EPOCH = 10 ** 15


def _is_epoch(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_EPOCH


# what makes two certifications' ACR comparable: the noise, the sample size, the confidence, the test images
SETTING = ('sigma', 'N', 'alpha', 'start_img', 'num_img', 'skip')


def run_of(log):
    """The identity of the training run whose log is `log`: the one the checkpoint beside it names
    (latest.pth, else the last EPOCH.pth, as a resumed run reads its folder). (run_id, '') or (None, why not)."""
    folder = os.path.dirname(os.path.abspath(log))
    try:
        names = os.listdir(folder)
    except OSError as e:
        return None, f'its folder cannot be read ({e.strerror})'
    candidates = run_checkpoints(names)
    if not candidates:
        return None, 'its folder holds no checkpoint of the run (latest.pth or EPOCH.pth) to name it'
    try:
        check_regular(os.path.join(folder, candidates[0]), 'a checkpoint is a file')
        values = checkpoint_values(os.path.join(folder, candidates[0]))
    except UsageError as e:
        return None, f'{candidates[0]} beside it cannot be read ({e})'
    except ValueError as e:
        return None, f'{candidates[0]} beside it is not a checkpoint of this tool ({e})'
    run_id = run_identity(values.get('run_id'), values.get('history')) if isinstance(values, dict) else None
    if not isinstance(run_id, str):
        return None, f'{candidates[0]} beside it names no training run'
    return run_id, ''


def _listed(names, limit=4):
    names = sorted(names, key=lambda n: int(n[:-len('.json')]))
    return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit else '')


def _setting_text(setting, keys):
    return ', '.join(f'{k} {setting.get(k)}' for k in keys)


def acr_interval(radii, level):
    """(low, high): the BCa bootstrap interval over the images of the ACR of a certification's hard radii (the
    images certified are a sample of the test set; docs/METHOD.md, "Comparing models"); None where there is no
    honest one (too few images, every radius the same): the point is drawn alone."""
    from rs.compare import bootstrap_mean
    _, low, high = bootstrap_mean(radii.clip(min=0.0), level)
    return None if low is None else (low, high)


def certified_acr(matdir, log):
    """The certified ACR of the run whose log is `log`, at each epoch it certified into `matdir`: ({epoch:
    ACR}, notes), from `certifications`."""
    found, notes, _ = certifications(matdir, log)
    return {e: acr(r) for e, r in found.items()}, notes


def certifications(matdir, log):
    """The certifications of the run whose log is `log`, at each epoch it certified into `matdir`.

    Returns ({epoch: hard radii}, notes, files read): the complete hard-mode certifications EPOCH.json that
    record this run and epoch (`checkpoint: {epoch, run_id}`), made with the setting (SETTING) most of them
    share (on a tie, that of the latest); `notes` says, one line each, which were left out and why. Each
    one drawn is read as every reader reads a run (`rs.runs.read_run`: rows against statistics, digests,
    the .mat and the JSON's summary against the logs), and its ACR computed from those radii: an edited
    certification of the run is refused, naming the file. A UsageError when the run of `log` cannot be
    named (no checkpoint beside it).
    """
    if not os.path.isdir(matdir):
        raise UsageError(f'--matdirs: {matdir} is not a folder')
    run_id, why = run_of(log)
    if run_id is None:
        raise UsageError(f'--matdirs {matdir}: cannot tell which certifications there are of the run of {log}: '
                         f'{why}; give - for it, or keep {log} beside the run\'s checkpoints')
    found, other, unnamed, moved = {}, [], [], []
    for name in os.listdir(matdir):
        stem = name[:-len('.json')]
        if not (name.endswith('.json') and stem.isdigit()):
            continue
        try:
            record = read_result_json(os.path.join(matdir, name), 'move it away') or {}
            if record.get('status') != 'complete':
                continue  # unfinished: nothing to draw yet
            setting = {k: record['identity'].get(k) for k in SETTING}
        except (UsageError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a certification of this tool: left out of the figure
        written_by = record.get('checkpoint') if isinstance(record.get('checkpoint'), dict) else {}
        if written_by.get('run_id') is None:
            unnamed.append(name)
        elif written_by['run_id'] != run_id:
            other.append(name)
        elif written_by.get('epoch') != int(stem):
            moved.append(name)
        else:
            found[int(stem)] = (setting, os.path.join(matdir, name))
    notes = []
    if other:
        notes.append(f'{matdir}: left out {_listed(other)}, certifications of other training runs than that of {log}')
    if unnamed:
        notes.append(f'{matdir}: left out {_listed(unnamed)}, which record no training run (written by --task test '
                     f'of another checkpoint, or before version 1.0)')
    if moved:
        notes.append(f'{matdir}: left out {_listed(moved)}, certifications of the run at another epoch than their name')
    counts = collections.Counter(json.dumps(s, sort_keys=True) for s, _ in found.values())
    if len(counts) > 1:
        # most of the run's certifications decide; on a tie, the latest (the run's setting now)
        latest = {json.dumps(found[e][0], sort_keys=True): e for e in sorted(found)}
        chosen = json.loads(max(counts, key=lambda s: (counts[s], latest[s])))
        for key in sorted(counts, key=lambda s: latest[s]):
            if json.loads(key) == chosen:
                continue
            theirs = json.loads(key)
            differ = [k for k in SETTING if theirs[k] != chosen[k]]
            names = [f'{e}.json' for e, (s, _) in found.items() if s == theirs]
            notes.append(f'{matdir}: left out {_listed(names)}, made with {_setting_text(theirs, differ)}, not the '
                         f'{_setting_text(chosen, differ)} of the run\'s other certifications')
        found = {e: v for e, v in found.items() if v[0] == chosen}
    radii, reads = {}, []
    for epoch, (_, path) in sorted(found.items()):
        run = read_run(path, 'hard')
        radii[epoch] = run.radii
        reads += run.reads
    return radii, notes, reads


def _finite(values):
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else float('nan') for v in values]


def figure(labels, logs, acrs, title=None, intervals=None):
    """One panel per quantity; `intervals`: one {epoch: (low, high)} per run (or None), drawn as error bars
    on the certified ACR."""
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
        for i, (label, log, by_epoch) in enumerate(zip(labels, logs, acrs)):
            color, style = STYLES[i % len(STYLES)]
            if key == 'acr':
                if by_epoch:
                    epochs = sorted(by_epoch)
                    ax.plot(epochs, [by_epoch[e] for e in epochs], marker='o', linestyle=style, color=color,
                            label=label)
                    bars = (intervals or [None] * len(acrs))[i] or {}
                    shown = [e for e in epochs if bars.get(e) is not None]
                    if shown:
                        ax.errorbar(shown, [by_epoch[e] for e in shown],
                                    yerr=[[by_epoch[e] - bars[e][0] for e in shown],
                                          [bars[e][1] - by_epoch[e] for e in shown]],
                                    fmt='none', ecolor=color, capsize=3, linewidth=1)
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
                   help='one --matdir per run (or - for none), to draw the certified ACR of the epochs the run '
                        'certified (only those of the run its log\'s checkpoint names, made with one setting)')
    p.add_argument('--title', default=None, help='title of the figure')
    p.add_argument('--level', type=level_type, default=LEVEL,
                   help='level of the interval over the test images drawn around each certified ACR (BCa bootstrap)')
    p.add_argument('--no_intervals', action='store_true', help='draw the certified ACR without its interval')
    p.add_argument('--out', required=True, help='prefix of the output files')
    p.add_argument('--overwrite', action='store_true',
                   help='replace files at the output paths that this tool did not write (never an input)')
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
        acrs, intervals, reads = [], [], list(args.logs)
        for log, matdir in zip(args.logs, args.matdirs or ['-'] * len(logs)):
            radii, notes, read = certifications(matdir, log) if matdir != '-' else ({}, [], [])
            for note in notes:
                print(f'note: {note}')
            acrs.append({e: acr(r) for e, r in radii.items()})
            intervals.append({} if args.no_intervals else {e: acr_interval(r, args.level) for e, r in radii.items()})
            reads += read
        if any(v is not None for bars in intervals for v in bars.values()):
            print(f'note: the bars around each certified ACR are {format_level(args.level)} intervals over the choice of the '
                  f'test images (BCa bootstrap), not the certificates\' alpha')
        output_folder(args.out)
        check_typesettable(labels + [args.title or ''])
        fig = figure(labels, logs, acrs, args.title, intervals)
        write_figure(os.path.abspath(args.out), fig, ('.png', '.pdf'), f'{args.out}.png and .pdf', inputs=reads,
                     overwrite=args.overwrite)
    status = run_command(work, f'{args.out}.png and .pdf')
    if status == 0:
        print(f'wrote {args.out}.png, {args.out}.pdf')
    return status


if __name__ == '__main__':
    sys.exit(main())
