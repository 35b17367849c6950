"""The runs to compare, read for analysis: a run's results per image from its files (`read_run`: TSV logs,
this project's JSON and statistics), and a check that several runs certified the same images
(`same_images`).

From the per-image statistics a run keeps (NAME.stats.jsonl), what they say beyond the certificate: the
accuracy under noise (`noise_accuracy`) and the lower confidence bound on the probability of the label
(`label_lower_bound`). numpy and scipy only; the intervals and paired tests over these runs are
`rs.compare`'s.
"""
import os
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np

from plumbing.errors import UsageError
from rs.results import read_result_json, read_text, read_tsv
from rs.stats import certified_radii, lower_confidence_bound, modes_of
from rs.statslog import parse_evidence


# --- what the per-image statistics say beyond the certificate ------------------------------------------

def noise_accuracy(label, cAHat, nA, n, label_count0, N0) -> np.ndarray:
    """Per image: the share of noisy copies the base classifier gives the label (its accuracy under noise).

    From the estimation draws (nA / n) where the selected class cAHat is the label: they counted the
    label. Elsewhere they counted another class, and the label's share among the N0 selection draws
    (`label_count0 / N0`) stands in; it is slightly low on images where the label and another class are
    close (selection then picked the other class when the label's draws happened to be few). Arrays
    over images."""
    label, cAHat = np.asarray(label), np.asarray(cAHat)
    nA, n = np.asarray(nA, dtype=np.float64), np.asarray(n, dtype=np.float64)
    counted = np.asarray(label_count0, dtype=np.float64) / np.asarray(N0, dtype=np.float64)
    return np.where(cAHat == label, nA / n, counted)


def label_lower_bound(label, cAHat, nA, n, alpha: float) -> np.ndarray:
    """Per image: the one-sided (1 - alpha) Clopper-Pearson lower bound on the probability that the base
    classifier gives the label under noise: pABar where the selected class is the label (Cohen et al.,
    CERTIFY step 3), 0 elsewhere (the estimation draws counted another class). An image is certified
    correct exactly when this is at least 1/2; its distribution shows what the ACR averages away."""
    return np.array([lower_confidence_bound(int(k), int(m), alpha) if c == y else 0.0
                     for y, c, k, m in zip(label, cAHat, nA, n)], dtype=np.float64)


# --- the runs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One run's results per image, in image order: what a comparison needs.

    `radii` in the MACER encoding (the radius where certified correct, -1 elsewhere), `idx` the images'
    indices (sorted), `labels` (None when the log has no label column);
    from this project's JSON, where there is one: `sigma`, `N`, `alpha`, `dataset` (None otherwise);
    from its hard statistics (NAME.stats.jsonl): `noise` (`noise_accuracy`) and `bound`
    (`label_lower_bound`) per image, None without them; `notes`: what could not be used, and why."""
    path: str
    mode: str
    radii: np.ndarray
    idx: np.ndarray
    labels: Optional[np.ndarray] = None
    sigma: Optional[float] = None
    N: Optional[int] = None
    alpha: Optional[float] = None
    dataset: Optional[str] = None
    noise: Optional[np.ndarray] = None
    bound: Optional[np.ndarray] = None
    notes: Tuple[str, ...] = ()

    def restricted(self, keep: np.ndarray) -> 'Run':
        """The same run on the images `keep` (indices it holds, in order)."""
        where = np.searchsorted(self.idx, keep)
        pick = (lambda a: None if a is None else a[where])
        return replace(self, idx=self.idx[where], labels=pick(self.labels), radii=self.radii[where],
                       noise=pick(self.noise), bound=pick(self.bound))


def _load_json(path: str) -> dict:
    record = read_result_json(path, 'give the NAME.json of a certification run of this tool')
    if not (record is not None and (isinstance(record.get('identity'), dict)
                                    or isinstance(record.get('recomputed'), dict))):
        raise UsageError(f'{path} is not a result summary of this tool (no "identity"); give its TSV log instead')
    return record


def record_beside(path: str, mode: str) -> Optional[Tuple[str, str]]:
    """(the JSON of this tool that describes result file `path`, the mode `path` holds), or None.

    NAME.json for NAME.json, NAME.mat (mode `mode`) and NAME.MODE.tsv; PREFIX.json for a recomputation's
    PREFIX.tsv. None where there is none (Cohen's and Salman's logs)."""
    folder, base = os.path.split(path)
    if base.endswith('.json'):
        return path, mode
    for suffix, its_mode in (('.mat', mode), ('.hard.tsv', 'hard'), ('.soft.tsv', 'soft'), ('.tsv', None)):
        if base.endswith(suffix):
            candidate = os.path.join(folder, base[:-len(suffix)] + '.json')
            if not os.path.isfile(candidate):
                return None
            if its_mode is None:  # PREFIX.tsv: a recomputation's, when PREFIX.json says so
                try:
                    recomputed = (read_result_json(candidate, 'give its TSV log') or {}).get('recomputed')
                except UsageError:
                    return None
                return (candidate, recomputed['mode']) if isinstance(recomputed, dict) and 'mode' in recomputed \
                    else None
            return candidate, its_mode
    return None


def _check_indices(path: str, idx: np.ndarray) -> None:
    """Refuse a log that holds an image twice: which row counts would be a guess."""
    order = np.argsort(idx, kind='stable')
    repeated = np.flatnonzero(np.diff(idx[order]) == 0)
    if repeated.size:
        first, second = sorted((int(order[repeated[0]]), int(order[repeated[0] + 1])))
        raise UsageError(f'{path} logs image {idx[first]} twice (lines {first + 2} and {second + 2}): a log holds each '
                         f'image once; remove the repeated row')


def _statistics(path: str, idx: np.ndarray, labels: np.ndarray, predict: Optional[np.ndarray],
                alpha: float) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Tuple[str, ...]]:
    """(noise accuracy, label bound, notes) per image of `idx` from the hard statistics log `path`."""
    if not os.path.isfile(path):
        return None, None, (f'{path} does not exist: no accuracy under noise or bound on pA for this run',)
    found = {i: (label, e['hard']) for i, label, e, _ in
             parse_evidence(read_text(path, 'move it away'), path, ('hard',))}
    missing = [int(i) for i in idx if int(i) not in found]
    if missing:
        return None, None, (f'{path} has no statistics for {len(missing)} of the {idx.size} images (e.g. image '
                            f'{missing[0]}): no accuracy under noise or bound on pA for this run',)
    for k, i in enumerate(idx):
        label, e = found[int(i)]
        if label != labels[k] or (predict is not None and predict[k] != -1 and predict[k] != e.cAHat):
            raise UsageError(f'{path}: image {i} has label {label} and selected class {e.cAHat} there, but label '
                             f'{labels[k]} and prediction {predict[k] if predict is not None else "?"} in its log: '
                             f'the statistics belong to another run')
    rows = [found[int(i)][1] for i in idx]
    counts0 = [e.counts0 or () for e in rows]
    label_count0 = [c[y] if 0 <= y < len(c) else 0 for c, y in zip(counts0, labels)]
    N0 = [max(sum(c), 1) for c in counts0]
    cAHat = [e.cAHat for e in rows]
    nA, n = [e.nA for e in rows], [e.n for e in rows]
    return (noise_accuracy(labels, cAHat, nA, n, label_count0, N0), label_lower_bound(labels, cAHat, nA, n, alpha),
            ())


def read_run(path: str, mode: str = 'hard') -> Run:
    """A result file as a `Run`: a TSV log (Cohen's, Salman's, this project's), this project's NAME.json (its
    log and statistics beside it), a recomputation's PREFIX.json or PREFIX.tsv, or a `.mat` (with its JSON
    beside it for the image indices). `mode`: which certificates of a JSON or `.mat` of both modes."""
    if not os.path.exists(path):
        raise UsageError(f'{path} does not exist')
    if os.path.isdir(path):
        raise UsageError(f'{path} is a folder; give a result file (NAME.json, a TSV log)')
    described = record_beside(path, mode)
    if described is None:
        if path.endswith('.mat'):
            raise UsageError(f'{path} holds no image indices, so its images cannot be matched with another run\'s; '
                             f'give its NAME.json or TSV log')
        return _from_log(path, mode)
    record_path, mode = described
    record = _load_json(record_path)
    folder = os.path.dirname(record_path)
    stem = os.path.basename(record_path)[:-len('.json')]
    if 'recomputed' in record and 'identity' not in record:
        r = record['recomputed']
        if r.get('mode') != mode:
            raise UsageError(f'{record_path} is a recomputation of {r.get("mode")} certificates, not {mode}; '
                             f'choose --mode {r.get("mode")}')
        log = os.path.join(folder, stem + '.tsv')
        return _from_log(log, mode, sigma=r.get('sigma'), N=r.get('N'), alpha=r.get('alpha'),
                         statistics=r.get('statistics'), dataset=None)
    identity = record['identity']
    if record.get('status') != 'complete':
        raise UsageError(f'{record_path} is a run that has not finished; finish it (rerun its command) first')
    try:
        modes = modes_of(identity.get('mode', 'hard'))
    except ValueError:
        raise UsageError(f'{record_path} is not a result summary of this tool (its mode is '
                         f'{identity.get("mode")!r})') from None
    if mode not in modes:
        raise UsageError(f'{record_path} holds {" and ".join(modes)} certificates, not {mode}; choose --mode '
                         f'{modes[0]}')
    files = record['files'] if isinstance(record.get('files'), dict) else {}
    logs = files['logs'] if isinstance(files.get('logs'), dict) else {}
    log = os.path.join(folder, os.path.basename(logs.get(mode) or f'{stem}.{mode}.tsv'))
    stats = os.path.join(folder, os.path.basename(files.get('stats') or f'{stem}.stats.jsonl'))
    return _from_log(log, mode, sigma=identity.get('sigma'), N=identity.get('N'), alpha=identity.get('alpha'),
                     statistics=stats if 'hard' in modes else None, dataset=identity.get('dataset'))


def _from_log(log: str, mode: str, sigma=None, N=None, alpha=None, statistics=None, dataset=None) -> Run:
    if not os.path.isfile(log):
        raise UsageError(f'{log} does not exist, but its run wrote it; restore it')
    columns = read_tsv(log)
    if 'idx' not in columns:
        raise UsageError(f'{log} has no idx column: its images cannot be matched with another run\'s')
    idx = columns['idx']
    if idx.size == 0:
        raise UsageError(f'{log} holds no results')
    _check_indices(log, idx)
    order = np.argsort(idx, kind='stable')
    labels = columns['label'][order] if 'label' in columns else None
    radii = certified_radii(columns['radius'], columns['correct'])[order]
    run = Run(log, mode, radii, idx[order], labels, None if sigma is None else float(sigma),
              None if N is None else int(N), None if alpha is None else float(alpha),
              None if dataset is None else str(dataset))
    if statistics is not None and mode == 'hard' and labels is not None and run.alpha is not None:
        predict = columns['predict'][order] if 'predict' in columns else None
        noise, bound, notes = _statistics(statistics, run.idx, labels, predict, run.alpha)
        run = replace(run, noise=noise, bound=bound, notes=notes)
    return run


def same_images(runs: Sequence[Run], names: Sequence[str], shared: bool,
                labels: Optional[Sequence[str]] = None) -> Tuple[List[Run], Optional[str]]:
    """The runs on the images they all certified, in the same order, and a note when `shared` dropped some.

    Without `shared`, runs on other images are refused with one line naming the first difference; an image
    with other labels in two runs is refused whatever `shared` says (the runs are on other data). Errors
    name the runs by `names` (their files), the note by `labels` (default: `names`)."""
    first = runs[0]
    for run, name in zip(runs[1:], names[1:]):
        if run.dataset is not None and first.dataset is not None and run.dataset != first.dataset:
            raise UsageError(f'{names[0]} certified images of {first.dataset}, {name} of {run.dataset}: a paired '
                             f'comparison needs the same images')
    common = first.idx
    for run in runs[1:]:
        common = np.intersect1d(common, run.idx)
    for run, name in zip(runs[1:], names[1:]):
        if not shared and not np.array_equal(run.idx, first.idx):
            only_first = np.setdiff1d(first.idx, run.idx)
            only_run = np.setdiff1d(run.idx, first.idx)
            i = min(only_first[:1].tolist() + only_run[:1].tolist())
            where, missing = (names[0], name) if i in only_first else (name, names[0])
            raise UsageError(f'{names[0]} and {name} certified other images: image {i} is in {where}, not in '
                             f'{missing} ({first.idx.size} and {run.idx.size} images, {common.size} in common '
                             f'to all runs); compare runs on the same images, or pass --shared to compare on the '
                             f'images all runs certified')
    if common.size == 0:
        raise UsageError(f'no image is certified by every run ({", ".join(names)}): nothing to compare')
    out = [r.restricted(common) for r in runs]
    for run, name in zip(out[1:], names[1:]):
        if run.labels is not None and out[0].labels is not None and not np.array_equal(run.labels, out[0].labels):
            k = int(np.flatnonzero(run.labels != out[0].labels)[0])
            raise UsageError(f'image {common[k]} has label {out[0].labels[k]} in {names[0]} and {run.labels[k]} in '
                             f'{name}: the runs are on other data, not the same images')
    note = None
    if any(r.idx.size != common.size for r in runs):
        note = (f'compared on the {common.size} images every run certified (--shared): ' +
                ', '.join(f'{name} {r.idx.size}' for r, name in zip(runs, labels or names)))
    return out, note
