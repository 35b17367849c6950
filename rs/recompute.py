"""Recomputation: a finished run's certificates at another alpha or with another bound, from the
statistics it kept (NAME.stats.jsonl), without sampling again (docs/METHOD.md, "Sufficient statistics").

The run's files are checked as a resume checks them. Every recomputation is recorded beside the run
(NAME.recomputations.jsonl, `RecomputationLog`) with the ones before it, since choosing alpha or the
bound after looking at results weakens the guarantee (`effective_alpha`); its outputs (PREFIX.tsv,
.mat, .json) never replace a run's files (`check_output_prefix`). numpy and scipy only:
`visualize/recompute.py` runs it.
"""
import datetime
import errno
import hashlib
import io
import json
import os
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from plumbing.errors import UsageError
from plumbing.files import file_kind, umask
from plumbing.locks import FolderLock
from plumbing.outputs import output_folder, text_writer, write_together
from plumbing.records import VERSION
from rs.checks import RowLimits
from rs.results import ImageResult, Row, header_line, mat_writer, read_text, strict_json, summary
from rs.runfiles import (RADIUS_COLUMN, ResultFiles, check_digest, images_without_statistics, read_record, read_results, run_files_in,
                         run_indices, write_record)
from rs.sequential import grid_of
from rs.stats import (GRID, BOUNDS, Evidence, NoEstimate, NonFiniteCertificate, certificates, certified_radii, check_alpha,
                      early_test_abstains, modes_of)


RECOMPUTED = ('.tsv', '.mat', '.json')  # the files of a recomputation, PREFIX + each


def check_output_prefix(prefix: str) -> List[str]:
    """The files of a recomputation written to `prefix` (PREFIX.tsv, .mat, .json), or a UsageError.

    Refused: a prefix without a file name (`''`, `DIR/`) or with a hidden one (hidden names are this
    tool's locks and temporaries), and any whose files would replace a file of a certification run in
    that folder (`run_files_in`: its own files or another run's). Any other existing file is replaced only
    when it is an earlier output of this tool, unchanged (`plumbing.outputs.OutputSet`), or with --overwrite."""
    base = os.path.basename(prefix)
    if not base or base.startswith('.'):
        raise UsageError(f'--out {prefix!r} names no file: give a prefix such as MAT/440-alpha0.01 (the files are '
                         f'PREFIX.tsv, PREFIX.mat and PREFIX.json; hidden names are not allowed)')
    folder = os.path.realpath(os.path.dirname(os.path.abspath(prefix)))
    owned = run_files_in(folder)
    paths = [os.path.join(folder, base + suffix) for suffix in RECOMPUTED]
    for path in paths:
        name = owned.get(os.path.basename(path))
        if name is not None:
            raise UsageError(f'--out {prefix} would replace {path}, a file of the certification run {name} in '
                             f'{folder}; a recomputation never replaces a run\'s files: choose another --out')
    return [os.path.join(os.path.dirname(os.path.abspath(prefix)), base + suffix) for suffix in RECOMPUTED]


class RecomputationLog:
    """NAME.recomputations.jsonl: one JSON object per recomputation made from a run's statistics.

    Choosing alpha or the bound after looking at results weakens the guarantee, so every recomputation
    is recorded, and each lists the ones before it. The history is protected as the run's other files
    are: the run's JSON records how many recomputations it holds and its SHA-256 (`recomputations`), so a
    line deleted, edited or added is refused, never forgotten. Used as a context manager: the run's lock
    (`.NAME.lock`, waited for), so recomputations of one run, and a certification rerun into its files, are
    made one after the other and each sees every earlier one. The file is opened without following a link."""

    def __init__(self, files: ResultFiles):
        self.files = files
        self.path = files.recomputations
        self.file: Optional[TextIO] = None
        self.lock = FolderLock(files.lock, f'{files.stem}.* (the results named {files.name})',
                               'wait for it to end')

    def __enter__(self) -> 'RecomputationLog':
        self.lock.acquire(wait=60.0)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK,
                         0o666 & ~umask())
        except OSError as e:
            self.lock.release()
            what = 'it is a symbolic link' if e.errno == errno.ELOOP else e.strerror
            raise UsageError(f'cannot record the recomputation in {self.path} ({what}): every recomputation of '
                             f'a run is recorded beside it; copy the run (its JSON, logs and statistics) to a folder '
                             f'you can write to') from None
        kind = file_kind(os.fstat(fd).st_mode)
        if kind != 'a file':
            os.close(fd)
            self.lock.release()
            raise UsageError(f'{self.path} is {kind}, not the record of the run\'s recomputations; move it away')
        self.file = os.fdopen(fd, 'a+', encoding='utf-8')
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.lock.release()

    def entries(self, record: dict) -> List[dict]:
        """The recomputations recorded, checked against what the run's JSON `record` says the history holds."""
        assert self.file is not None
        self.file.seek(0)
        text = self.file.read()
        out = []
        for number, line in enumerate(text.split('\n'), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get('alpha'), (int, float))):
                raise UsageError(f'{self.path}, line {number}, is not a record of a recomputation; the file was '
                                 f'edited: restore it (the record of what was looked at cannot be dropped)')
            out.append(entry)
        anchor = record.get('recomputations')
        if isinstance(anchor, dict):
            digest = hashlib.sha256(text.encode('utf-8')).hexdigest()
            if anchor.get('count') != len(out) or anchor.get('sha256') != digest:
                raise UsageError(f'{self.path} holds {len(out)} recomputations, but {self.files.json} records '
                                 f'{anchor.get("count")} (and another digest): the history was edited or cut; '
                                 f'restore it (the record of what was looked at cannot be dropped)')
        elif out and not isinstance(record.get('recomputations'), type(None)):
            raise UsageError(f'{self.files.json}: its record of the recomputations is damaged; restore it')
        return out

    def append(self, entry: dict, record: dict) -> None:
        """Add `entry`, then record the history's new count and digest in the run's JSON."""
        assert self.file is not None
        self.file.write(strict_json(entry, self.path) + '\n')
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.seek(0)
        text = self.file.read()
        count = sum(1 for line in text.split('\n') if line.strip())
        anchored = dict(record, recomputations={'count': count,
                                                'sha256': hashlib.sha256(text.encode('utf-8')).hexdigest()})
        write_record(self.files, anchored)


def effective_alpha(looks: Sequence[Tuple[str, str, float]]) -> float:
    """The failure probability of a result chosen after these looks ((mode, bound, alpha) each), all together.

    Certificates of one mode and bound at several alphas are nested (a larger alpha only raises the
    lower bound), so together they fail with probability at most the largest alpha; different modes or
    bounds add up (a union bound)."""
    largest: Dict[Tuple[str, str], float] = {}
    for mode, bound, alpha in looks:
        largest[(mode, bound)] = max(alpha, largest.get((mode, bound), 0.0))
    return float(sum(largest.values()))


def recompute(record_path: str, alpha: Optional[float] = None, bound: Optional[str] = None,
              mode: Optional[str] = None, out: Optional[str] = None, overwrite: bool = False) -> dict:
    """A run's certificates recomputed from its statistics log at another `alpha` or with another `bound`.

    `record_path`: the run's NAME.json (its identity gives sigma, alpha, N0, N, M and the modes; the
    statistics are NAME.stats.jsonl beside it, the labels and times its TSV log). `mode`: which of the
    run's certificates (default: the run's mode; hard for `both`). No sampling: the certificates are
    exactly those a fresh run with this alpha and the same seed gives (selection does not depend on
    alpha; docs/METHOD.md, "Sufficient statistics"), early abstention included: the early test is
    replayed at `alpha` on its kept statistics. Where that cannot be exact, nothing is recomputed: an
    image the test abstained on that it would not abstain on at `alpha` (its estimation draws were
    never made), or, for a run of version 1.0.0 (which kept the test's statistics only where it
    abstained), an `alpha` above the run's.

    The run's files are checked as a resume checks them (`read_results`: every row and statistics
    line; `check_digest`: the digest a finished run records). Every recomputation is recorded in
    NAME.recomputations.jsonl (`RecomputationLog`) and lists the earlier ones. With `out`, writes
    OUT.tsv, OUT.mat and OUT.json as one set (`plumbing.outputs.write_together`), never over a run's files
    (`check_output_prefix`), over its inputs, or over a file this tool did not write (unless `overwrite`). The
    output JSON records the SHA-256 of PREFIX.tsv and PREFIX.mat, which readers check. Returns {'rows': [Row], 'radii': MACER encoding, 'summary', 'recomputed':
    what was done, from what, and what was looked at before}.
    """
    folder, base = os.path.split(record_path)
    folder = folder or '.'
    if not base.endswith('.json'):
        raise UsageError(f'{record_path}: give the NAME.json of a certification run of this tool')
    name = base[:-len('.json')]
    record = read_record(ResultFiles(folder, name, ()))
    if record is None:
        raise UsageError(f'{record_path} does not exist')
    identity = record['identity']
    try:
        modes = modes_of(identity.get('mode', 'hard'))
    except ValueError:
        raise UsageError(f'{record_path} is not a result summary of this tool (its mode is {identity.get("mode")!r})') \
            from None
    mode = mode or modes[0]
    if mode not in modes:
        raise UsageError(f'{record_path} holds {" and ".join(modes)} certificates, not {mode}')
    files = ResultFiles(folder, name, modes)
    if record.get('status') != 'complete':
        raise UsageError(f'{record_path} is a run that has not finished; finish it (rerun its command) first')
    sigma, run_alpha, M = float(identity['sigma']), float(identity['alpha']), int(identity.get('early_abstain') or 0)
    alpha = run_alpha if alpha is None else alpha
    try:
        alpha = check_alpha(alpha)
    except ValueError as e:
        raise UsageError(f'{e}; choose another --alpha') from None
    bound = bound or BOUNDS[mode][0]
    if bound not in BOUNDS[mode]:
        raise UsageError(f'{mode} statistics allow the bounds {", ".join(BOUNDS[mode])}, not {bound}: the soft scores '
                         f'are not 0/1 outcomes, which Clopper-Pearson needs')
    grid = identity.get('radii')
    if grid is not None:
        grid = grid_of(grid)
        if bound != 'clopper-pearson':
            raise UsageError(f'{record_path} is a sequential certification: its tests are Clopper-Pearson\'s, so it '
                             f'can be recomputed at another alpha, not with the {bound} bound')
    outputs = check_output_prefix(out) if out is not None else None
    if not os.path.exists(files.stats):
        raise UsageError(f'{files.stats} does not exist: the run was made by a version of this tool that kept no '
                         f'statistics, so it cannot be recomputed without sampling again')
    for path in files.logs.values():
        if not os.path.exists(path):
            raise UsageError(f'{path} does not exist, but the finished run wrote it; restore it, or certify again')
    indices = run_indices(identity)
    # the run's logs read as a resume reads them: every row and statistics line checked, and the
    # statistics must give the run's own rows at the run's alpha (an edit is refused, never recomputed);
    # then, as there, the digest a finished run recorded, which sees the edits that keep those rules
    done = read_results(files, indices, RowLimits.of(identity, record.get('num_classes')), parts=False,
                        without_statistics=images_without_statistics(record), complete=True)
    digest = check_digest(files, record)
    missing = [i for i in indices if done[i].evidence is None]
    if missing:
        raise UsageError(f'{files.stats} has no statistics for {len(missing)} images (e.g. image {missing[0]}): they '
                         f'were certified by a version of this tool that kept none; certify them again to recompute')
    evidence = {i: tuple((done[i].evidence or {})[m] for m in modes) for i in indices}
    if M > 0 and alpha > run_alpha:
        unknown = [i for i in indices if any(e.test_statistics() is None for e in evidence[i])]
        if unknown:
            raise UsageError(f'{files.stats} keeps no early-test statistics for image {unknown[0]} (nor '
                             f'{len(unknown) - 1} others), as version 1.0.0 kept them only where the test abstained: '
                             f'at alpha {alpha:g}, above the run\'s {run_alpha:g}, the test could abstain on them, so '
                             f'a recomputation could differ from a fresh run; recompute at an alpha up to '
                             f'{run_alpha:g}, or certify again')
    rows, early_now = _recomputed_rows(done, evidence, modes.index(mode), sigma, alpha, bound, run_alpha, grid,
                                       int(identity['N']))
    radii = certified_radii([r.radius for r in rows], [r.correct for r in rows])
    early_kept = sum(1 for i in indices if evidence[i][0].early)
    written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    entry = {'alpha': alpha, 'bound': bound, 'mode': mode, 'out': None if out is None else os.path.abspath(out),
             'written': written, 'version': VERSION}
    dataset = identity.get('dataset') or 'data set\'s'
    with RecomputationLog(files) as history:
        # under the run's lock: the record as it is now (a recomputation since may have added to the history),
        # and the logs still the ones checked above
        current = read_record(files)
        if current is None or (digest and not check_digest(files, current)):
            raise UsageError(f'{record_path} changed while it was recomputed; run the recomputation again')
        raw = json.loads(read_text(files.json, 'restore it'))
        earlier = history.entries(raw)
        # the run's own certificates were fixed before anything was looked at: they keep their 1 - alpha
        own = (alpha, bound) == (run_alpha, BOUNDS[mode][0])
        looks = [(mode, bound, alpha)] if own else [(m, BOUNDS[m][0], run_alpha) for m in modes] + \
            [(e.get('mode', mode), e.get('bound', ''), float(e['alpha'])) for e in earlier] + [(mode, bound, alpha)]
        recomputed = {
            'from': os.path.abspath(record_path), 'statistics': os.path.abspath(files.stats), 'mode': mode,
            'alpha': alpha, 'bound': bound, 'run_alpha': run_alpha, 'run_bound': BOUNDS[mode][0], 'sigma': sigma,
            'N0': int(identity['N0']), 'N': int(identity['N']), 'early_abstain': M, 'early_abstentions_kept': early_kept,
            'early_abstentions': early_now,
            'integrity': ('the SHA-256 of the logs and statistics is the one the run recorded' if digest else
                          'the run (version 1.0.0) recorded no digest of its logs: they were checked for consistency '
                          'only'),
            'labels': (f'checked against the statistics log, not the {dataset} test set (a recomputation reads no '
                       f'data; the run checked them when it certified)'),
            'history': os.path.abspath(files.recomputations),
            'earlier': earlier,
            'effective_alpha': effective_alpha(looks),
            'warning': (f'the run\'s results (alpha {run_alpha:g}) and {len(earlier)} earlier recomputation'
                        f'{"" if len(earlier) == 1 else "s"} of its statistics (`earlier`) were there to be looked at '
                        f'before this one: if this alpha or bound was chosen after looking, the guarantee is weakened, '
                        f'and these certificates, taken with the ones looked at, hold with probability 1 - '
                        f'effective_alpha (the largest alpha per mode and bound, summed), not 1 - alpha (at the run\'s '
                        f'own alpha and bound they are the run\'s certificates, made before any look)'),
        }
        if grid is not None:
            recomputed['radii'] = list(grid)
            recomputed['radius_column'] = RADIUS_COLUMN
        result = {'rows': rows, 'radii': radii, 'summary': summary(radii, GRID if grid is None else grid,
                                                                   grid is not None), 'recomputed': recomputed}
        if outputs is not None:
            output_folder(out)
            log_text = header_line() + ''.join(r.line() for r in rows)
            mat_bytes = _mat_bytes(mode, radii)
            content = {'version': VERSION, 'recomputed': recomputed, 'summary': {mode: result['summary']},
                       'sha256': {os.path.basename(outputs[0]): hashlib.sha256(log_text.encode()).hexdigest(),
                                  os.path.basename(outputs[1]): hashlib.sha256(mat_bytes).hexdigest()}}
            write_together([(outputs[0], text_writer(log_text)), (outputs[1], _bytes_writer(mat_bytes)),
                            (outputs[2], text_writer(strict_json(content, outputs[2], indent=1) + '\n'))],
                           f'the recomputation {out}.*', inputs=[files.json, *files.logs.values(), files.stats,
                                                                 files.recomputations], overwrite=overwrite)
        history.append(entry, raw)
    return result


def _mat_bytes(mode: str, radii) -> bytes:
    """The recomputation's .mat (`rs.results.mat_writer`) as bytes, so that its JSON can record their digest."""
    import scipy.io as sio
    mat_writer({mode: radii})  # the checks of every .mat this tool writes: no NaN, no infinity
    buffer = io.BytesIO()
    sio.savemat(buffer, {mode: np.asarray(radii, dtype=np.float64)})
    return buffer.getvalue()


def _bytes_writer(data: bytes):
    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(data)
    return write


def _recomputed_rows(done: Dict[int, ImageResult], evidence: Dict[int, Tuple[Evidence, ...]], column: int,
                     sigma: float, alpha: float, bound: str, run_alpha: float, grid=None,
                     N: Optional[int] = None) -> Tuple[List[Row], int]:
    """Each image's row at `alpha` (the mode in `column` of its evidence; labels and times as logged), and how
    many images the early test abstains on there; a UsageError where no row can equal a fresh run's."""
    rows = []
    early_now = 0
    for i, e_i in evidence.items():
        tests = [t for e in e_i if (t := e.test_statistics()) is not None]
        early_now += len(tests) == len(e_i) and early_test_abstains(tests, alpha)
        logged = done[i].rows[e_i[column].mode]
        try:
            prediction, r = certificates(e_i, sigma, alpha, bound, radii=grid, N=N)[column]
        except NoEstimate as e:
            if grid is not None:
                raise UsageError(f'image {i} cannot be recomputed at alpha {alpha:g}: {e}, which a fresh run would '
                                 f'have drawn; a sequential run recomputes only at an alpha whose tests all stop '
                                 f'within the looks it made (its own, {run_alpha:g}, always does): certify again with '
                                 f'--alpha {alpha:g}') from None
            raise UsageError(f'image {i} cannot be recomputed at alpha {alpha:g}: {e}, so a fresh run would draw its '
                             f'N estimation samples and none were kept; certify again with --alpha {alpha:g}, or '
                             f'recompute at an alpha at which the early test abstains on it (e.g. the run\'s, '
                             f'{run_alpha:g})') from None
        except NonFiniteCertificate as e:
            raise UsageError(f'image {i} has no finite certificate at alpha {alpha:g} ({e}); choose another alpha') \
                from None
        rows.append(Row(i, logged.label, prediction, r, int(prediction == logged.label), logged.seconds))
    return rows, early_now
