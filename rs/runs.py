"""The runs to compare or draw, read for analysis: a run's results per image from its files (`read_run`, the one
reader of every command that reads results: this project's runs checked as a resume checks them, TSV logs of
other tools read as they are and said to be unchecked), and a check that several runs certified the same
images (`same_images`).

From the per-image statistics a run keeps (NAME.stats.jsonl), what they say beyond the certificate: the
accuracy under noise (`noise_accuracy`) and the lower confidence bound on the probability of the label
(`label_lower_bound`). numpy and scipy only; the intervals and paired tests over these runs are
`rs.compare`'s.
"""
import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from plumbing.errors import UsageError
from plumbing.files import check_regular, sha256_of
from rs.checks import RowLimits
from rs.results import is_run_record, parse_log, read_bytes, read_mat, read_result_json, read_text, read_tsv, summary
from rs.runfiles import ResultFiles, check_digest, images_without_statistics, read_results, run_indices
from rs.sequential import grid_of
from rs.stats import BOUNDS, GRID, MODES, certified_radii, lower_confidence_bound, modes_of


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
    """One run's results per image, in image order: what a comparison or a figure needs.

    `radii` in the MACER encoding (the radius where certified correct, -1 elsewhere), `idx` the images'
    indices (sorted; None for a `.mat` that has no JSON to give them), `labels` (None when the log has no
    label column); `mode`, the certificates read ('hard' or 'soft'; a log of another tool is taken as
    hard, as Cohen's and Salman's are); from this project's JSON, where there is one: `sigma`, `N0`, `N`,
    `alpha`, `bound`, `dataset` (None otherwise); from its hard statistics: `noise` (`noise_accuracy`) and
    `bound_pA` (`label_lower_bound`) per image, None without them.

    How it was checked (`checked`): 'digests' (every row and statistics line checked against the run's
    arguments and the digests its JSON records), 'consistency' (checked, but the run recorded no digest:
    an earlier version's), 'unchecked' (a file without this tool's record, e.g. Cohen's logs). `complete`:
    False for an unfinished run read with `incomplete` (then `expected` is the number of images it will
    have). `reads`: every file read, which no output may replace. `key`: the run's identity, the same
    whichever of its files is given (its record's identity and mode, else its rows' digest). `notes`:
    what could not be used, and why."""
    path: str
    mode: str
    radii: np.ndarray
    idx: Optional[np.ndarray]
    labels: Optional[np.ndarray] = None
    sigma: Optional[float] = None
    N: Optional[int] = None
    alpha: Optional[float] = None
    dataset: Optional[str] = None
    noise: Optional[np.ndarray] = None
    bound: Optional[np.ndarray] = None
    notes: Tuple[str, ...] = ()
    N0: Optional[int] = None
    bound_name: Optional[str] = None
    checked: str = 'unchecked'
    complete: bool = True
    expected: Optional[int] = None
    reads: Tuple[str, ...] = ()
    key: str = ''
    grid: Optional[Tuple[float, ...]] = None  # a sequential run's radii (`radii` then holds grid radii only)

    def restricted(self, keep: np.ndarray) -> 'Run':
        """The same run on the images `keep` (indices it holds, in order)."""
        assert self.idx is not None
        where = np.searchsorted(self.idx, keep)
        pick = (lambda a: None if a is None else a[where])
        return replace(self, idx=self.idx[where], labels=pick(self.labels), radii=self.radii[where],
                       noise=pick(self.noise), bound=pick(self.bound))

    def settings(self) -> Dict[str, object]:
        """The certificate settings a comparison must share: sigma, N0, N, alpha, bound, mode (None: unknown)."""
        return {'sigma': self.sigma, 'N0': self.N0, 'N': self.N, 'alpha': self.alpha, 'bound': self.bound_name,
                'mode': self.mode}


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _file_mode(base: str) -> Optional[str]:
    """The mode a result file's name says it holds (NAME.hard.tsv, NAME.soft.tsv), None where it says none."""
    for m in MODES:
        if base.endswith(f'.{m}.tsv'):
            return m
    return None


def record_beside(path: str) -> Optional[str]:
    """The JSON of this tool that describes result file `path`, or None where there is none (Cohen's and
    Salman's logs, a MACER `.mat`): `path` itself for a .json; NAME.json for NAME.mat and NAME.MODE.tsv;
    PREFIX.json for a recomputation's PREFIX.tsv."""
    folder, base = os.path.split(path)
    if base.endswith('.json'):
        return path
    for suffix in ('.mat', '.hard.tsv', '.soft.tsv', '.tsv'):
        if base.endswith(suffix):
            candidate = os.path.join(folder, base[:-len(suffix)] + '.json')
            return candidate if os.path.lexists(candidate) else None
    return None


def _chosen_mode(path: str, asked: Optional[str], file_mode: Optional[str], modes: Sequence[str],
                 record_path: Optional[str] = None) -> str:
    """The mode to read: the one asked for, else the file's own, else the run's first (hard for a run of both);
    a UsageError for a file, or a run, that holds other certificates than those asked for."""
    if asked is not None and file_mode is not None and asked != file_mode:
        raise UsageError(f'{path} holds {file_mode} certificates, not the {asked} ones --mode {asked} asks for; give '
                         f'the run\'s {asked} log or its NAME.json, or --mode {file_mode}')
    mode = asked or file_mode or modes[0]
    if mode not in modes:
        raise UsageError(f'{record_path or path} holds {" and ".join(modes)} certificates, not {mode}; choose --mode '
                         f'{modes[0]}')
    return mode


def read_run(path: str, mode: Optional[str] = None, incomplete: bool = False, sequential: bool = False) -> Run:
    """A result file as a `Run`, checked as a resume checks it: the one reader of every command that reads results.

    Accepts this project's NAME.json, NAME.MODE.tsv or NAME.mat (each read through the run's JSON: every row
    and statistics line checked against the run's arguments, the digests the finished run recorded, the .mat
    and the summary against the logs), a recomputation's PREFIX.json or PREFIX.tsv (its digests and rows),
    and a TSV log of another tool (Cohen's, Salman's; `checked` 'unchecked') or a MACER `.mat` without JSON
    (no image indices). `mode`: which certificates (None: the file's own, else the run's first). An
    unfinished run is refused unless `incomplete`; an edited, cut or foreign file is refused with one line
    naming it. A sequential run (`--radii`) is refused unless `sequential`: its radius column is the largest
    certified radius of its grid, from which no curve or ACR can be computed (`sequential_refusal`)."""
    check_regular(path, 'give a result file (NAME.json, a TSV log)', 'a result file')
    record_path = record_beside(path)
    file_mode = _file_mode(os.path.basename(path))
    if record_path is None:
        if path.endswith('.mat'):
            return _from_mat(path, mode)
        return _from_log(path, _chosen_mode(path, mode, file_mode, MODES[:1] if file_mode is None else (file_mode,)))
    record = read_result_json(record_path, 'move it away, or give the run\'s files in a folder of their own')
    if record is not None and is_run_record(record):
        if record['identity'].get('radii') is not None and not sequential:
            raise UsageError(sequential_refusal(record_path, record['identity']['radii']))
        return _checked_run(path, record_path, record, mode, file_mode, incomplete)
    if record is not None and isinstance(record.get('recomputed'), dict):
        if record['recomputed'].get('radii') is not None:
            raise UsageError(sequential_refusal(record_path, record['recomputed']['radii']))
        return _checked_recomputation(path, record_path, record, mode)
    if record_path == path:
        raise UsageError(f'{path} is not a result summary of this tool (no "identity"); give its TSV log instead')
    raise UsageError(f'{record_path}, beside {path}, is not a result summary of this tool, so {path} cannot be '
                     f'checked against its run; move {os.path.basename(record_path)} away to read the file unchecked')


def sequential_refusal(record_path: str, radii) -> str:
    """Why a reader of radii refuses a sequential run."""
    try:
        grid = ', '.join(f'{r:g}' for r in grid_of(radii))
    except (TypeError, ValueError):
        grid = str(radii)[:60]
    return (f'{record_path} is a sequential certification at the radii {grid}: its radius column is the largest of '
            f'those its tests certified, not each image\'s certified radius, so no ACR, curve or comparison between '
            f'radii can be computed from it; its certified accuracy at those radii is the summary in its JSON, or '
            f'certify with CERTIFY (no --radii) for the full curve')


def _checked_run(path: str, record_path: str, record: dict, asked: Optional[str], file_mode: Optional[str],
                 incomplete: bool) -> Run:
    folder, stem = os.path.split(record_path)
    stem = stem[:-len('.json')]
    identity = record['identity']
    try:
        modes = modes_of(identity.get('mode', 'hard'))
        num_classes = record.get('num_classes')
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
            raise TypeError
        limits = RowLimits.of(identity, num_classes)
        indices = run_indices(identity)
    except (ValueError, KeyError, TypeError, OverflowError):
        raise UsageError(f'{record_path} is not a result summary of this tool (its identity is damaged); restore '
                         f'it') from None
    mode = _chosen_mode(path, asked, file_mode, modes, record_path)
    files = ResultFiles(folder or '.', stem, modes)
    complete = record.get('status') == 'complete'
    if not complete and not incomplete:
        raise UsageError(f'{record_path} is a run that has not finished; finish it (rerun its command) first, or '
                         f'pass --incomplete to read the images it holds (the figure then says so)')
    for log in files.logs.values():
        if complete and not os.path.lexists(log):
            raise UsageError(f'{log} does not exist, but its run wrote it; restore it')
    done = read_results(files, indices, limits, parts=not complete,
                        without_statistics=images_without_statistics(record), complete=complete)
    checked = 'consistency'
    if complete and check_digest(files, record):
        checked = 'digests'
    order = [i for i in indices if i in done]
    if not order:
        raise UsageError(f'{record_path}: the run holds no certified image yet')
    radii_of = {m: certified_radii([done[i].rows[m].radius for i in order], [done[i].rows[m].correct for i in order])
                for m in modes}
    reads = [record_path, *files.logs.values()] + ([files.stats] if os.path.lexists(files.stats) else [])
    if complete:
        _check_summary(record_path, record, radii_of)
        if os.path.lexists(files.mat):
            _check_mat(files.mat, radii_of)
            reads.append(files.mat)
    rows = [done[i].rows[mode] for i in order]
    idx = np.array(order, dtype=np.int64)
    labels = np.array([r.label for r in rows], dtype=np.int64)
    noise = bound = None
    notes: Tuple[str, ...] = ()
    if identity.get('radii') is not None:
        notes = ('a sequential run stops each image when its radii are decided, so its counts are no estimate of '
                 'the accuracy under noise (optional stopping biases them): none is given',)
    elif 'hard' in modes and mode == 'hard':
        evidence = [(done[i].evidence or {}).get('hard') for i in order]
        if all(e is not None for e in evidence):
            e_ = [e for e in evidence if e is not None]
            counts0 = [e.counts0 or () for e in e_]
            label_count0 = [c[y] if 0 <= y < len(c) else 0 for c, y in zip(counts0, labels)]
            N0 = [max(sum(c), 1) for c in counts0]
            cAHat, nA, n = [e.cAHat for e in e_], [e.nA for e in e_], [e.n for e in e_]
            noise = noise_accuracy(labels, cAHat, nA, n, label_count0, N0)
            bound = label_lower_bound(labels, cAHat, nA, n, limits.alpha)
        else:
            missing = sum(e is None for e in evidence)
            notes = (f'{files.stats} has no statistics for {missing} of the {len(order)} images (certified by a '
                     f'version that kept none): no accuracy under noise or bound on pA for this run',)
    return Run(path, mode, radii_of[mode], idx, labels, limits.sigma, limits.N, limits.alpha,
               None if identity.get('dataset') is None else str(identity['dataset']), noise, bound, notes,
               N0=limits.N0, bound_name=BOUNDS[mode][0], checked=checked, complete=complete,
               expected=len(indices), reads=tuple(reads),
               key='run:' + json.dumps([identity, mode], sort_keys=True, default=str),
               grid=None if identity.get('radii') is None else grid_of(identity['radii']))


def selection_shares(record_path: str, dataset: str, size: int, num_classes: int) -> np.ndarray:
    """The smoothed predictions of every training image, [size, num_classes] float64: the vote shares counts0 / N0
    of the selection draws of a finished hard-mode certification of the whole training set of `dataset` (`--task
    test --split train`), checked as every reader checks a run (rows against statistics, digests). CAT-RS trains
    towards them (`methods.catrs`). A UsageError, one line naming the file, for anything else."""
    fix = 'give the NAME.json of a certification of the training set (--task test --split train --mode hard)'
    check_regular(record_path, fix, 'a result file')
    record = read_result_json(record_path, fix)
    if record is None or not is_run_record(record):
        raise UsageError(f'{record_path} is not a result summary of this tool; {fix}')
    identity = record['identity']
    if identity.get('split', 'test') != 'train' or identity.get('dataset') != dataset:
        raise UsageError(f'{record_path} certified {identity.get("dataset")} {identity.get("split", "test")} images, '
                         f'not the {dataset} training set; {fix}')
    if record.get('status') != 'complete':
        raise UsageError(f'{record_path} is a run that has not finished; finish it (rerun its command) first')
    try:
        modes = modes_of(identity.get('mode', 'hard'))
        indices = run_indices(identity)
    except (ValueError, KeyError, TypeError, OverflowError):
        raise UsageError(f'{record_path}: its identity is damaged; restore it') from None
    if 'hard' not in modes or list(indices) != list(range(size)):
        raise UsageError(f'{record_path} does not hold hard statistics of all {size} training images (it certified '
                         f'{identity.get("num_img")} from {identity.get("start_img")}, mode {identity.get("mode")}); '
                         f'{fix} with --start_img 0 --num_img {size} --skip 1')
    folder, stem = os.path.split(record_path)
    files = ResultFiles(folder or '.', stem[:-len('.json')], modes)
    done = read_results(files, indices, RowLimits.of(identity, num_classes), parts=False,
                        without_statistics=images_without_statistics(record), complete=True)
    check_digest(files, record)
    shares = np.zeros((size, num_classes))
    for i in indices:
        e = (done[i].evidence or {}).get('hard')
        if e is None or e.counts0 is None or len(e.counts0) != num_classes:
            raise UsageError(f'{files.stats} keeps no selection counts of training image {i}; certify the training set '
                             f'again with this version')
        shares[i] = np.asarray(e.counts0, dtype=np.float64) / sum(e.counts0)
    return shares


def _check_summary(record_path: str, record: dict, radii_of: Dict[str, np.ndarray]) -> None:
    """A finished run's JSON summary must be what its logs give (a reader may draw it, as trainingcurves does)."""
    given = record.get('summary')
    grid = record['identity'].get('radii')
    for m, radii in radii_of.items():
        s: Any = given.get(m) if isinstance(given, dict) else {}
        wanted = summary(radii, GRID if grid is None else grid_of(grid), grid is not None)
        try:
            same_acr = s['acr'] is None if grid is not None else \
                math.isclose(float(s['acr']), wanted['acr'], rel_tol=1e-12, abs_tol=1e-15)
            ok = same_acr and \
                [int(v) for v in s['number']] == wanted['number'] and int(s['num_img']) == wanted['num_img']
        except (KeyError, TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            acr_text = 'none' if wanted['acr'] is None else f'{wanted["acr"]:.6g}'
            raise UsageError(f'{record_path}: its {m} summary (ACR, counts) is not what the run\'s logs give (ACR '
                             f'{acr_text}); the JSON was edited: restore it, or certify again')


def _check_mat(mat: str, radii_of: Dict[str, np.ndarray]) -> None:
    """A finished run's .mat must hold the radii its logs give: it is outside the digests, and readers read it."""
    content = read_mat(mat)
    for m, radii in radii_of.items():
        if m not in content or content[m].shape != radii.shape or not np.array_equal(content[m], radii):
            raise UsageError(f'{mat} does not hold the {m} radii of the run\'s logs (it was edited or replaced); '
                             f'restore it, or delete it and read the run from its NAME.json')
    extra = [m for m in content if m not in radii_of]
    if extra:
        raise UsageError(f'{mat} holds {extra[0]} radii, which its run did not certify; the file was replaced')


def _checked_recomputation(path: str, record_path: str, record: dict, asked: Optional[str]) -> Run:
    """A recomputation's PREFIX.json and PREFIX.tsv: the digests it records, and every row against its arguments."""
    r = record['recomputed']
    stem = record_path[:-len('.json')]
    log, mat = stem + '.tsv', stem + '.mat'
    try:
        mode = str(r['mode'])
        limits = RowLimits(float(r['sigma']), int(r['N']), float(r['alpha']))
    except (KeyError, TypeError, ValueError, OverflowError):
        raise UsageError(f'{record_path} is not a recomputation of this tool (its record is damaged)') from None
    mode = _chosen_mode(path, asked, None, (mode,), record_path)
    check_regular(log, 'a recomputation writes PREFIX.tsv beside PREFIX.json: restore it')
    recorded = record.get('sha256')
    checked = 'consistency'
    if isinstance(recorded, dict):
        for file in (log, mat):
            if recorded.get(os.path.basename(file)) != sha256_of(file):
                raise UsageError(f'{file} is not the file the recomputation wrote: its SHA-256 differs from the one '
                                 f'{record_path} records (it was edited or replaced); recompute again')
        checked = 'digests'
    rows = parse_log(read_text(log, 'recompute again'), log)
    for number, row in enumerate(rows, start=2):
        limits.check(row, mode, log, number)
    run = _from_rows(log, mode, rows)
    if os.path.lexists(mat):
        _check_mat(mat, {mode: run.radii})
    N0 = r.get('N0')
    return replace(run, path=path, sigma=limits.sigma, N=limits.N, alpha=limits.alpha,
                   N0=N0 if isinstance(N0, int) and not isinstance(N0, bool) else None,
                   bound_name=str(r.get('bound') or BOUNDS[mode][0]), checked=checked,
                   reads=(record_path, log) + ((mat,) if os.path.lexists(mat) else ()),
                   key='recomputation:' + run.key)


def _check_indices(path: str, idx: np.ndarray) -> None:
    """Refuse a log that holds an image twice: which row counts would be a guess."""
    order = np.argsort(idx, kind='stable')
    repeated = np.flatnonzero(np.diff(idx[order]) == 0)
    if repeated.size:
        first, second = sorted((int(order[repeated[0]]), int(order[repeated[0] + 1])))
        raise UsageError(f'{path} logs image {idx[first]} twice (lines {first + 2} and {second + 2}): a log holds each '
                         f'image once; remove the repeated row')


def _from_rows(log: str, mode: str, rows) -> Run:
    idx = np.array([r.idx for r in rows], dtype=np.int64)
    if idx.size == 0:
        raise UsageError(f'{log} holds no results')
    _check_indices(log, idx)
    order = np.argsort(idx, kind='stable')
    labels = np.array([r.label for r in rows], dtype=np.int64)[order]
    radii = certified_radii([r.radius for r in rows], [r.correct for r in rows])[order]
    return Run(log, mode, radii, idx[order], labels, reads=(log,),
               key=_digest(idx[order], labels, radii))


def published_entry(log: str) -> Optional[dict]:
    """The entry of a published log in the `manifest.json` beside it (`reproduce/published/`: its method, data set,
    sigma, N0, N, alpha and SHA-256), None for a log that no manifest lists. A UsageError, naming the file, for a
    listed log whose bytes are not those the manifest records (edited or replaced)."""
    folder, base = os.path.split(log)
    manifest = os.path.join(folder, 'manifest.json')
    if not os.path.isfile(manifest):
        return None
    try:
        entries = json.loads(read_text(manifest, 'restore it')).get('logs', [])
        entry = next((e for e in entries if isinstance(e, dict) and e.get('file') == base), None)
    except (ValueError, AttributeError, UsageError):
        return None
    if entry is None:
        return None
    if hashlib.sha256(read_bytes(log)).hexdigest() != entry.get('sha256'):
        raise UsageError(f'{log} is not the published log {manifest} lists: its SHA-256 differs (it was edited or '
                         f'replaced); restore it, or copy it elsewhere to read it unchecked')
    return entry


def _from_log(log: str, mode: str) -> Run:
    """A TSV log of another tool, or of this one without its JSON: read, each row checked on its own; a published
    log that a manifest beside it lists gets that manifest's settings (`published_entry`, checked 'published'),
    any other is unchecked against any run."""
    entry = published_entry(log)
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
    run = Run(log, mode, radii, idx[order], labels, reads=(log,),
              key='log:' + _digest(idx[order], radii, -1 if labels is None else labels))
    if entry is None:
        return run
    try:
        return replace(run, sigma=float(entry['sigma']), N0=int(entry['N0']), N=int(entry['N']),
                       alpha=float(entry['alpha']), bound_name='clopper-pearson', dataset=str(entry['dataset']),
                       checked='published', reads=(log, os.path.join(os.path.dirname(log), 'manifest.json')))
    except (KeyError, TypeError, ValueError):
        raise UsageError(f'the manifest beside {log} does not give its settings (sigma, N0, N, alpha); restore '
                         f'it') from None


def _from_mat(mat: str, mode: Optional[str]) -> Run:
    """A MACER `.mat` without this tool's JSON: its radii only (no image indices, nothing to check them against)."""
    content = read_mat(mat)
    mode = mode or next(iter(content))
    if mode not in content:
        raise UsageError(f'{mat} has no {mode!r} results (it has {", ".join(content)}); choose --mode '
                         f'{next(iter(content))}')
    radii = content[mode]
    if radii.size == 0:
        raise UsageError(f'{mat} holds no results')
    return Run(mat, mode, radii, None, reads=(mat,), key='mat:' + _digest(radii))


def _idx(run: Run) -> np.ndarray:
    """A run's image indices; every run compared has them (`read_run` gives none only for a bare .mat)."""
    if run.idx is None:
        raise UsageError(f'{run.path} holds no image indices, so its images cannot be matched with another run\'s; '
                         f'give its NAME.json or TSV log')
    return run.idx


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
    common = _idx(first)
    for run in runs[1:]:
        common = np.intersect1d(common, _idx(run))
    for run, name in zip(runs[1:], names[1:]):
        if not shared and not np.array_equal(_idx(run), _idx(first)):
            only_first = np.setdiff1d(_idx(first), _idx(run))
            only_run = np.setdiff1d(_idx(run), _idx(first))
            i = min(only_first[:1].tolist() + only_run[:1].tolist())
            where, missing = (names[0], name) if i in only_first else (name, names[0])
            raise UsageError(f'{names[0]} and {name} certified other images: image {i} is in {where}, not in '
                             f'{missing} ({_idx(first).size} and {_idx(run).size} images, {common.size} in common '
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
    if any(_idx(r).size != common.size for r in runs):
        note = (f'compared on the {common.size} images every run certified (--shared): ' +
                ', '.join(f'{name} {_idx(r).size}' for r, name in zip(runs, labels or names)))
    return out, note
