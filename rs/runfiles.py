"""One certification run's files in its folder: their names, starting or resuming them, writing the logs and
the record (the run's JSON), their digests, finishing them. The formats are `rs.results`'s (docs/FORMATS.md).

In a folder, a run named NAME writes:
- `NAME.json`: how the results were made (the identity, every argument, every environment that
  certified images), written first with status "running", then with the summary, the SHA-256 of the
  logs and status "complete";
- `NAME.hard.tsv` / `NAME.soft.tsv`: the community's log, one row appended and flushed per image
  (`LogWriter`);
- `NAME.stats.jsonl`: each image's sufficient statistics (`rs.stats.Evidence`), appended just
  before its rows, from which its certificates can be recomputed at another alpha or bound
  (`rs.recompute`);
- `NAME.mat`: the MACER code's file, written (atomically) at the end (`finish_run`).

Rerunning the same command resumes from the logs (`open_run`): a run with another identity is refused
rather than mixed in, every logged row and statistics line is checked against what the arguments allow
(`rs.checks.read_results`), and a finished run's logs against the digest its JSON records
(`check_digest`). numpy and scipy only, as `rs.results`.
"""
import errno
import hashlib
import os
import re
import sys
from datetime import datetime, timezone
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from plumbing.errors import DiskFull, UsageError, disk_full_message
from plumbing.files import atomic_write_text, remove_stale_temporaries
from plumbing.records import VERSION, differences
from rs.checks import RowLimits
from rs.results import (ImageResult, Row, header_line, identity_key, is_run_record, parse_log, read_result_json, read_text,
                        strict_json, summary, write_mat)
from rs.stats import GRID, MODES
from rs.statslog import evidence_line, parse_evidence


class ResultFiles:
    """The files of run NAME in a folder: NAME.json, NAME.mat, the TSV logs NAME.{mode}.tsv, the
    sufficient statistics NAME.stats.jsonl, the record of the recomputations made from them
    NAME.recomputations.jsonl and, under torchrun, each rank's part logs NAME.{mode}.partR.tsv and
    NAME.stats.partR.jsonl, merged into the logs at the end."""

    def __init__(self, folder: str, name, modes: Sequence[str]):
        self.folder, self.name, self.modes = folder, str(name), tuple(modes)
        self.stem = os.path.join(folder, self.name)
        self.mat = self.stem + '.mat'
        self.json = self.stem + '.json'
        self.recomputations = self.stem + '.recomputations.jsonl'
        self.lock = os.path.join(folder, f'.{self.name}.lock')
        self.logs, self.stats = self.part(None)

    def part(self, rank: Optional[int]) -> Tuple[Dict[str, str], str]:
        """(TSV logs by mode, statistics log) of one rank of a distributed run (rank None: the run's own)."""
        tag = '' if rank is None else f'.part{rank}'
        return {m: f'{self.stem}.{m}{tag}.tsv' for m in self.modes}, f'{self.stem}.stats{tag}.jsonl'

    def part_ranks(self) -> List[int]:
        pattern = re.compile(re.escape(self.name) + r'\.(?:hard|soft|stats)\.part(\d+)\.(?:tsv|jsonl)$')
        return sorted({int(m.group(1)) for m in map(pattern.match, os.listdir(self.folder)) if m})

    def remove_parts(self) -> None:
        for r in self.part_ranks():
            logs, stats = self.part(r)
            for path in (*logs.values(), stats):
                if os.path.lexists(path):
                    os.unlink(path)

    def all(self) -> List[str]:
        """Every file of the run that exists or may exist, part logs of any rank included."""
        parts = [p for r in self.part_ranks() for logs, stats in [self.part(r)] for p in (*logs.values(), stats)]
        return [self.json, self.mat, *self.logs.values(), self.stats, self.recomputations, *parts]

    def owns(self, base: str) -> bool:
        """Whether `base` is the name of one of this run's files, in any mode (its temporaries may be removed)."""
        return re.fullmatch(re.escape(self.name) + rf'\.(?:json|mat|(?:{"|".join(MODES)})(?:\.part\d+)?\.tsv|'
                            r'stats(?:\.part\d+)?\.jsonl|recomputations\.jsonl)', base) is not None

    def names(self) -> dict:
        """The file names, for the JSON."""
        base = os.path.basename
        return {'mat': base(self.mat), 'logs': {m: base(p) for m, p in self.logs.items()}, 'stats': base(self.stats),
                'recomputations': base(self.recomputations)}

    def digests(self) -> Dict[str, str]:
        """{file name: SHA-256} of the logs and the statistics: what a complete run's JSON records (`check_digest`)."""
        out = {}
        for path in (*self.logs.values(), self.stats):
            h = hashlib.sha256()
            with open(path, 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''):
                    h.update(block)
            out[os.path.basename(path)] = h.hexdigest()
        return out


def run_files_in(folder: str) -> Dict[str, str]:
    """{file name: the run it belongs to} of every certification run in `folder`, existing or to come.

    A run is known by its JSON (a record of this tool, whose `files` are listed too) or its statistics
    log (NAME.stats.jsonl, NAME.stats.partR.jsonl: a run of version 1.0.0 or later has one from its
    start); every name such a run may write counts (`ResultFiles.owns`), in any mode."""
    try:
        present = os.listdir(folder)
    except OSError:
        return {}
    names = set()
    for base in present:
        m = re.fullmatch(r'(.+)\.(?:json|stats(?:\.part\d+)?\.jsonl)', base)
        if not m:
            continue
        if base.endswith('.json'):
            try:
                record = read_result_json(os.path.join(folder, base), 'move it away')
            except UsageError:
                continue
            if not (record is not None and ('identity' in record or 'status' in record)):
                continue
        names.add(m.group(1))
    owned = {}
    for name in names:
        files = ResultFiles(folder, name, MODES)
        for base in present:
            if files.owns(base):
                owned[base] = name
        for suffix in ('.json', '.mat', '.hard.tsv', '.soft.tsv', '.stats.jsonl', '.recomputations.jsonl'):
            owned.setdefault(name + suffix, name)
        try:
            listed = (read_result_json(files.json, 'move it away') or {}).get('files')
            for value in (listed or {}).values():
                for base in (value.values() if isinstance(value, dict) else [value]):
                    if isinstance(base, str):
                        owned.setdefault(os.path.basename(base), name)
        except (UsageError, AttributeError):
            pass
    return owned


def run_indices(identity: dict) -> range:
    """The test images of the run with this identity: start_img, start_img + skip, ..., num_img of them; of a
    shard I/K (`--shard`), every K-th of those from the I-th."""
    start, num, skip = int(identity['start_img']), int(identity['num_img']), int(identity['skip'])
    indices = range(start, start + num * skip, skip)
    shard = identity.get('shard')
    if shard is not None:
        i, k = (int(v) for v in shard)
        if not 1 <= i <= k:
            raise ValueError(f'shard {shard} is not a slice I of K')
        indices = indices[i - 1::k]
    return indices


def read_results(files: ResultFiles, indices: Sequence[int], limits: RowLimits, *, parts: bool = True,
                 without_statistics: Optional[FrozenSet[int]] = frozenset(),
                 complete: bool = False) -> Dict[int, ImageResult]:
    """{idx: ImageResult} of the images the logs (and the part logs) hold in full, every row and statistics
    line checked: what a run's own files must satisfy, for a resume and a recomputation alike.

    An image counts as certified when every mode has its row. Its statistics line is written first, so
    it must have one too (`limits.statistics_problem` checks it against the rows), except the images in
    `without_statistics` (certified by a version that kept none; None: any image, a run begun before
    version 1.0.0). The same image twice with the same result (a job submitted twice before locks
    existed) is one image; with different results the folder mixes two runs and is refused, as is a row
    of an image this run does not certify, or a row outside `limits`. `complete`: every image of
    `indices` must have its rows (a finished run); a missing one is refused, naming its log.
    """
    wanted = set(indices)
    rows: Dict[str, Dict[int, Row]] = {m: {} for m in files.modes}
    evidence: Dict[int, tuple] = {}
    sources: List[Optional[int]] = [None, *(files.part_ranks() if parts else [])]
    fix = 'move it away or choose another --matdir'
    for rank in sources:
        logs, stats = files.part(rank)
        for m in files.modes:
            path = logs[m]
            if not os.path.lexists(path):
                continue
            for number, row in enumerate(parse_log(read_text(path, fix), path), start=2):
                if row.idx not in wanted:
                    raise UsageError(f'{path}, line {number}: image {row.idx} is not one this run certifies; the '
                                     f'log belongs to another run: {fix}')
                limits.check(row, m, path, number)
                earlier = rows[m].get(row.idx)
                if earlier is not None and earlier.result() != row.result():
                    raise UsageError(f'{path}, line {number}: image {row.idx} is logged twice with different results '
                                     f'(predict {earlier.predict} radius {earlier.radius}, then predict {row.predict} '
                                     f'radius {row.radius}); the folder mixes two runs: {fix}')
                rows[m].setdefault(row.idx, row)
        if os.path.lexists(stats):
            for idx, label, e, drawn in parse_evidence(read_text(stats, fix), stats, files.modes):
                if idx not in wanted:
                    raise UsageError(f'{stats}: image {idx} is not one this run certifies; the statistics belong to '
                                     f'another run: {fix}')
                evidence.setdefault(idx, (label, e, drawn))
    done = {}
    for i in indices:
        lacking = [m for m in files.modes if i not in rows[m]]
        if lacking:
            if complete:
                raise UsageError(f'{files.logs[lacking[0]]} has no row for image {i}, which the finished run '
                                 f'certified: the log was cut or edited; restore it, or certify again into another '
                                 f'--matdir or --name')
            continue
        found = {m: rows[m][i] for m in files.modes}
        if i not in evidence:
            if without_statistics is not None and i not in without_statistics:
                m = files.modes[0]
                raise UsageError(f'{files.logs[m]}: image {i} has its rows but no line in {files.stats}, which every '
                                 f'image certified by version 1.0.0 or later has (it is written before the rows); the '
                                 f'files were edited: {fix}')
            done[i] = ImageResult(found)
            continue
        label, e, drawn = evidence[i]
        problem = limits.statistics_problem(i, label, e, drawn, found)
        if problem:
            raise UsageError(f'{files.stats}: image {i}: {problem}; the files were edited or come from other '
                             f'arguments: {fix}')
        done[i] = ImageResult(found, e, drawn)
    return done


# --- the record: the run's JSON ----------------------------------------------------------------------

def read_record(files: ResultFiles) -> Optional[dict]:
    """The JSON of the run in the folder (None when there is none), in the current format (`read_result_json`);
    a UsageError when it is not this tool's."""
    if not os.path.lexists(files.json):
        return None
    record = read_result_json(files.json, 'move it away or choose another --matdir')
    if record is None or not is_run_record(record):
        raise UsageError(f'{files.json} is not a result summary of this tool; move it away or choose another '
                         f'--matdir or --name')
    return record


def images_without_statistics(record: dict) -> Optional[FrozenSet[int]]:
    """The images of a run whose rows need no statistics line: every image of a run begun before version 1.0.0
    (None), else those its JSON lists (certified before 1.0.0, in a run that a later version finished)."""
    if 'version' not in record:
        return None
    return frozenset(record.get('without_statistics', ()))


def check_identity(earlier: dict, identity: dict, what: str) -> None:
    """Refuse, naming up to three differences, when `identity` is not the one `what` was made with."""
    differ = differences(identity_key(earlier), identity_key(identity))
    if differ:
        raise UsageError(f'{what} holds results made with other arguments ({differ}); rerun with the same '
                         f'arguments to resume, or choose another --matdir or --name')


def check_digest(files: ResultFiles, record: dict) -> bool:
    """Whether the logs and statistics are the ones a finished run recorded (`sha256` in its JSON).

    A consistency check sees an edit that breaks the run's own rules; one that keeps them (a statistics
    line and its row changed together) only the digest sees. Returns False when the JSON records none
    (a run finished by version 1.0.0: then only the consistency checks apply); a UsageError naming the
    file when a digest differs."""
    recorded = record.get('sha256')
    if not recorded:
        return False
    now = files.digests()
    if set(recorded) != set(now):
        raise UsageError(f'{files.json} records the digests of {", ".join(sorted(recorded))}, not of this run\'s '
                         f'logs ({", ".join(sorted(now))}); it belongs to other files: move it away')
    for base, digest in now.items():
        if recorded[base] != digest:
            raise UsageError(f'{os.path.join(files.folder, base)} is not the file the run wrote: its SHA-256 differs '
                             f'from the one {files.json} records, so it was edited or replaced after the run finished; '
                             f'restore it, or certify again into another --matdir or --name')
    return True


def write_record(files: ResultFiles, content: dict) -> None:
    atomic_write_text(files.json, strict_json(content, files.json, indent=1) + '\n')


# --- the logs ----------------------------------------------------------------------------------------

def write_logs(files: ResultFiles, indices: Sequence[int], results: Dict[int, ImageResult]) -> None:
    """The run's logs as they stand once `results` are all there is: index order, each image once.

    The TSV logs get every image in `results`; the statistics log every one that has statistics."""
    order = [i for i in indices if i in results]
    for m in files.modes:
        atomic_write_text(files.logs[m], header_line() + ''.join(results[i].rows[m].line() for i in order))
    lines = []
    for i in order:
        r = results[i]
        if r.evidence is not None and r.drawn is not None:
            lines.append(evidence_line(i, r.rows[files.modes[0]].label, r.evidence, r.drawn))
    atomic_write_text(files.stats, ''.join(lines))


class LogWriter:
    """This process's logs: per image, its statistics line, then one row per mode, each flushed."""

    def __init__(self, files: ResultFiles, job) -> None:
        self.files = files
        logs, stats = files.part(None if job.world == 1 else job.rank)
        try:
            for path in logs.values():
                if not os.path.exists(path):
                    atomic_write_text(path, header_line())
            self.stats = open(stats, 'a')
            self.logs = {m: open(logs[m], 'a') for m in files.modes}
        except OSError as e:
            raise UsageError(f'cannot open the logs of {files.name} in {files.folder} ({e.strerror})') from None

    def append(self, result: ImageResult) -> None:
        assert result.evidence is not None and result.drawn is not None  # an image certified now has both
        try:
            # the statistics first: an image whose rows are all there then always has them too
            row = next(iter(result.rows.values()))
            self.stats.write(evidence_line(row.idx, row.label, result.evidence, result.drawn))
            self.stats.flush()
            for m, row in result.rows.items():
                self.logs[m].write(row.line())
                self.logs[m].flush()  # a crash after this line loses nothing certified so far
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(disk_full_message(e, f'the logs of {self.files.name} in {self.files.folder}')) \
                    from None
            raise

    def close(self) -> None:
        for f in (self.stats, *self.logs.values()):
            try:
                f.close()
            except OSError:
                pass


# --- a run's start and end -----------------------------------------------------------------------------

def open_run(files: ResultFiles, identity: dict, record: Optional[dict], indices: Sequence[int],
             limits: RowLimits) -> Tuple[Dict[int, ImageResult], List[dict]]:
    """Start the files of a new run, or check that the earlier run there has the same identity and
    gather what it left (its logs and any ranks' part logs) into the logs. Returns the images done,
    {idx: ImageResult}, and the environments the earlier run was computed on.

    A finished run's files must also be the ones it recorded (`check_digest`): its rows are kept, so an
    edit that its own statistics agree with would otherwise be finished into the results."""
    remove_stale_temporaries(files.folder, files.owns)
    earlier = read_record(files)
    if earlier is None:
        strays = [p for p in files.all() if os.path.lexists(p)]
        if strays:
            raise UsageError(f'{strays[0]} exists without {os.path.basename(files.json)}, so it cannot be checked '
                             f'to belong to this run; move it away or choose another --matdir')
        _write_json(files, identity, dict(record or {}, environments=add_environment([], record)), 'running')
        write_logs(files, indices, {})
        return {}, []
    check_identity(earlier['identity'], identity, files.json)
    done = read_results(files, indices, limits, without_statistics=images_without_statistics(earlier))
    if earlier['status'] == 'complete' and not check_digest(files, earlier):
        print(f'note: {files.json} (an earlier version\'s) records no digest of its logs: they are checked for '
              f'consistency only', file=sys.stderr)
    write_logs(files, indices, done)  # what a crash cut short, and the part logs, are folded in
    files.remove_parts()
    if done:
        print(f'resuming {files.name}: {len(done)} of {len(indices)} images already certified in {files.folder}',
              file=sys.stderr)
    environments = earlier.get('environments')
    if not (isinstance(environments, list) and all(isinstance(e, dict) for e in environments)):
        environments = [earlier['environment']] if isinstance(earlier.get('environment'), dict) else []
    return done, environments


def add_environment(environments: List[dict], record: Optional[dict]) -> List[dict]:
    """`environments` with this process's environment (`record['environment']`) at the end, once."""
    mine = (record or {}).get('environment')
    return list(environments) + ([mine] if mine is not None and mine not in environments else [])


def finish_run(files: ResultFiles, identity: dict, record: dict, indices: Sequence[int],
               results: Dict[int, ImageResult], radii: Dict[str, np.ndarray], samples: Dict[str, object],
               grid: Optional[Sequence[float]] = None) -> None:
    """The final logs (every image once, in index order), the .mat and the complete JSON, which records the
    logs' digest and the images certified by a version that kept no statistics. `grid`: a sequential run's
    radii (its summary is at those, without an ACR, and the JSON says what its radius column holds)."""
    write_logs(files, indices, results)
    files.remove_parts()
    write_mat(files.mat, radii)
    seconds = sum(results[i].rows[files.modes[0]].seconds for i in indices)
    without = [i for i in indices if results[i].evidence is None]
    record = dict(record, sha256=files.digests(), **({'without_statistics': without} if without else {}))
    if grid is not None:
        record = dict(record, radius_column=RADIUS_COLUMN)
    _write_json(files, identity, record, 'complete', radii_by_mode=radii, seconds=seconds, samples=samples, grid=grid)


# what the JSON of a sequential run says of its radius column (and of the .mat, which holds the same radii)
RADIUS_COLUMN = ('sequential certification (identity.radii): each row\'s radius is the largest radius of the grid '
                 'whose test certified it (pA >= Phi(r / sigma) with probability at least 1 - alpha), not the '
                 'certified radius sigma * Phi^-1(pABar) of CERTIFY; certified accuracy holds at the grid\'s radii '
                 'only, and no ACR is computed from such a run')


def _write_json(files, identity, record, status, radii_by_mode=None, seconds=None, samples=None, grid=None):
    # the record of the recomputations made from the run's statistics stays with it (`rs.recompute`): a rerun
    # of the finished run's command rewrites the JSON, never that record
    try:
        earlier = read_record(files) if os.path.lexists(files.json) else None
    except UsageError:
        earlier = None
    anchor = (earlier or {}).get('recomputations')
    if anchor is not None:
        record = dict(record or {}, recomputations=anchor)
    content = {
        'status': status,
        'version': VERSION,
        'identity': identity,
        **(record or {}),
        'files': files.names(),
        'written': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    if radii_by_mode is not None:
        content['summary'] = {m: summary(r, GRID if grid is None else grid, grid is not None)
                              for m, r in radii_by_mode.items()}
        content['seconds'] = seconds
        content['samples'] = samples
        total = samples.get('total', samples['standard_per_image'] * len(next(iter(radii_by_mode.values()))))
        content['samples_per_second'] = total / seconds if seconds else None
    write_record(files, content)
