"""Result files: the formats (the MACER code's `.mat`, the community's TSV logs) and the bookkeeping
of a certification run in a folder (which files, what is done, checking and merging the logs).

numpy and scipy only: `rs.certify` writes these files and `visualize/` reads them with the same
functions (docs/FORMATS.md describes every file).

- `.mat`: key `hard` and/or `soft`, one float per image: the radius when correct, -1 when wrong or
  abstained (written by `scipy.io.savemat`, as the original, so MATLAB and Octave read it).
- TSV: header `idx label predict radius correct time`, one row per image; `predict` -1 is an
  abstention; `time` is the seconds spent on the image, written as Cohen's code writes it
  (`H:MM:SS.ffffff`); plain seconds (`15.4`) are read as well.
"""
import datetime
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from common import UsageError, atomic_write, atomic_write_text, differences, first_line, jsonable
from rs.stats import BOUNDS, GRID, MODES, Evidence, acr, certificate, certified_accuracy, certified_radii, modes_of, radius

TSV_HEADER = ('idx', 'label', 'predict', 'radius', 'correct', 'time')


@dataclass(frozen=True)
class Row:
    """One certified image, as a TSV row."""
    idx: int
    label: int
    predict: int
    radius: float
    correct: int
    seconds: float

    def line(self) -> str:
        # repr keeps every digit, so the .mat rebuilt from a log equals the one computed in memory
        return (f'{self.idx}\t{self.label}\t{self.predict}\t{float(self.radius)!r}\t{self.correct}\t'
                f'{format_seconds(self.seconds)}\n')

    def result(self) -> tuple:
        """What the row says about its image, without the time it took."""
        return self.idx, self.label, self.predict, self.radius, self.correct


def format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=float(seconds)))


_TIMEDELTA = re.compile(r'^(?:(-?\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$')


def parse_seconds(text: str) -> float:
    """Seconds from `H:MM:SS[.f]` (Cohen's code, Salman's logs), `N day(s), H:MM:SS` or plain seconds."""
    m = _TIMEDELTA.match(text.strip())
    if m:
        days, h, mi, s = m.groups()
        return (int(days or 0) * 86400) + int(h) * 3600 + int(mi) * 60 + float(s)
    return float(text)


def header_line() -> str:
    return '\t'.join(TSV_HEADER) + '\n'


def read_text(path: str, fix: str) -> str:
    """A log's text; a UsageError naming the problem (a folder, unreadable, not UTF-8) and `fix`."""
    if os.path.isdir(path):
        raise UsageError(f'{path} is a folder, not a log; {fix}')
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except UnicodeDecodeError as e:
        line = 1 + open(path, 'rb').read()[:e.start].count(b'\n')
        raise UsageError(f'{path}, line {line}, holds bytes that are not text (UTF-8): it is not a log this tool '
                         f'wrote; {fix}') from None
    except OSError as e:
        raise UsageError(f'cannot read {path} ({e.strerror}); {fix}') from None


def parse_log(text: str, path: str) -> List[Row]:
    """Rows of a TSV log written by this project, in file order.

    A last line without its newline is a row cut short by a crash and is left out; any other
    malformed line is an error, since the file is then not a log this project wrote.
    """
    lines = text.split('\n')
    if lines and lines[-1] != '':
        lines = lines[:-1]  # unterminated: the process died while writing it
    lines = [line for line in lines if line != '']
    if not lines:
        return []
    if tuple(lines[0].split('\t')) != TSV_HEADER:
        raise UsageError(f'{path} is not a certification log (its first line is not "{" ".join(TSV_HEADER)}"); '
                         f'move it away or choose another --matdir')
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split('\t')
        try:
            if len(fields) != len(TSV_HEADER):
                raise ValueError
            idx, label, predict, r, correct, seconds = fields
            rows.append(Row(int(idx), int(label), int(predict), float(r), int(correct), parse_seconds(seconds)))
        except ValueError:
            raise UsageError(f'{path}, line {number}, is not a row of a certification log; '
                             f'move the file away or choose another --matdir') from None
    return rows


def read_tsv(path: str) -> Dict[str, np.ndarray]:
    """Any community TSV log (Cohen, Salman, this project) as a dict of numpy arrays by column.

    Columns are found by their header names, so extra columns are ignored. `correct` is kept as
    written: a wrong prediction can carry a positive radius (docs/METHOD.md, "Protocol and metrics"). Every row is
    checked: a radius that is NaN, negative or infinite, or a `correct` other than 0 or 1, is refused.
    """
    text = read_text(path, 'give a certification log')
    lines = text.split('\n')
    header = [h.strip() for h in lines[0].rstrip('\r').split('\t')]
    body = [(n, line.rstrip('\r').split('\t')) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    missing = [c for c in ('radius', 'correct') if c not in header]
    if missing:
        raise UsageError(f'{path} is not a certification log: no column {" or ".join(missing)} in its header '
                         f'(expected "{" ".join(TSV_HEADER)}")')
    out = {}
    for name, kind in (('idx', int), ('label', int), ('predict', int), ('radius', float), ('correct', int),
                       ('time', parse_seconds)):
        if name not in header:
            continue
        col, values = header.index(name), []
        for number, row in body:
            try:
                values.append(kind(row[col].strip()))
            except (ValueError, IndexError):
                raise UsageError(f'{path}, line {number}: column {name} does not hold a value of its kind; is it '
                                 f'a certification log?') from None
        out[name] = np.array(values, dtype=np.int64 if kind is int else np.float64)
    for number, (r, c) in zip((n for n, _ in body), zip(out['radius'], out['correct'])):
        if not (math.isfinite(r) and r >= 0):
            raise UsageError(f'{path}, line {number}: radius {r} is not a finite number >= 0; the log is damaged')
        if c not in (0, 1):
            raise UsageError(f'{path}, line {number}: correct is {c}, not 0 or 1; the log is damaged')
    return out


def tsv_radii(path: str) -> np.ndarray:
    """A TSV log's radii in the MACER encoding (radius if correct, else -1)."""
    log = read_tsv(path)
    return certified_radii(log['radius'], log['correct'])


def write_mat(path: str, radii_by_mode: Dict[str, Sequence[float]]) -> None:
    """The MACER code's `.mat`: one key per mode, float64 radii (-1 for wrong), written atomically."""
    import scipy.io as sio
    content = {mode: np.asarray(r, dtype=np.float64) for mode, r in radii_by_mode.items()}
    atomic_write(path, lambda tmp: sio.savemat(tmp, content))


def read_mat(path: str) -> Dict[str, np.ndarray]:
    """The radii per mode (`hard`, `soft`) of a MACER `.mat` file, each a 1-D float64 array.

    Every value must be -1 (wrong or abstained) or a finite radius >= 0: a damaged or foreign file is
    refused with one line, never turned into a table.
    """
    import scipy.io as sio
    if os.path.getsize(path) == 0:
        raise UsageError(f'{path} is empty (0 bytes), not a .mat file')
    try:
        content = sio.loadmat(path)
    except NotImplementedError:
        raise UsageError(f'{path} is a MATLAB v7.3 (HDF5) file; save it with -v7 (or as this tool writes it) '
                         f'to plot it') from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError, ... on foreign files
        raise UsageError(f'cannot read {path} as a .mat file ({first_line(e)})') from None
    found = {}
    for m in MODES:
        if m not in content:
            continue
        value = content[m]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in 'fiu':
            raise UsageError(f'{path}: "{m}" holds {_describe(value)}, not an array of radii; is it a MACER result '
                             f'file?')
        radii = value.astype(np.float64).reshape(-1)
        bad = np.flatnonzero(~(np.isfinite(radii) & ((radii >= 0) | (radii == -1))))
        if bad.size:
            raise UsageError(f'{path}: "{m}"[{bad[0]}] is {radii[bad[0]]}, neither -1 (wrong or abstained) nor a '
                             f'finite radius >= 0; the file is damaged')
        found[m] = radii
    if not found:
        keys = [k for k in content if not k.startswith('__')]
        raise UsageError(f'{path} has no key "hard" or "soft" (it has {", ".join(keys) or "none"}); '
                         f'is it a MACER result file?')
    return found


def _describe(value):
    if isinstance(value, np.ndarray):
        kind = {'U': 'text', 'S': 'text', 'O': 'a cell array', 'V': 'a struct'}.get(value.dtype.kind, value.dtype)
        return kind if isinstance(kind, str) else f'values of type {kind}'
    return type(value).__name__


def summary(radii, grid=GRID) -> dict:
    """Certified accuracy on `grid`, counts and ACR of one mode's radii (MACER encoding)."""
    radii = np.asarray(radii, dtype=np.float64)
    acc = certified_accuracy(radii, grid)
    return {'num_img': int(radii.size),
            'radius': [float(r) for r in grid],
            'number': [int(round(a * radii.size)) for a in acc],
            'accuracy': [float(a) for a in acc],
            'acr': acr(radii)}


def format_summary(radii_by_mode, grid=GRID) -> str:
    """The public MACER code's certification summary: the image count, then a block per mode."""
    lines = ['===Certify Summary===']
    for i, (mode, radii) in enumerate(radii_by_mode.items()):
        s = summary(radii, grid)
        if i == 0:
            lines.append(f'Total Image Number: {s["num_img"]}')
        if len(radii_by_mode) > 1:
            lines.append(f'==={mode.capitalize()} certify===')
        for r, number in zip(s['radius'], s['number']):
            # the public code prints number / total * 100; rounded, so 57 of 100 reads 57.0, not 56.99999999999999
            lines.append(f'Radius: {r}  Number: {number}  Acc: {round(number / s["num_img"] * 100, 10)}')
        lines.append(f'ACR: {s["acr"]}')
    return '\n'.join(lines)


# --- a certification run in a folder ---------------------------------------------------------------

class ResultFiles:
    """The files of run NAME in a folder: NAME.json, NAME.mat, the TSV logs NAME.{mode}.tsv, the
    sufficient statistics NAME.stats.jsonl and, under torchrun, each rank's part logs
    NAME.{mode}.partR.tsv and NAME.stats.partR.jsonl, merged into the logs at the end."""

    def __init__(self, folder: str, name, modes: Sequence[str]):
        self.folder, self.name, self.modes = folder, str(name), tuple(modes)
        self.stem = os.path.join(folder, self.name)
        self.mat = self.stem + '.mat'
        self.json = self.stem + '.json'
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
        return [self.json, self.mat, *self.logs.values(), self.stats, *parts]

    def owns(self, base: str) -> bool:
        """Whether `base` is the name of one of this run's files (its temporaries may be removed)."""
        return re.fullmatch(re.escape(self.name) + rf'\.(?:json|mat|(?:{"|".join(MODES)})(?:\.part\d+)?\.tsv|'
                            r'stats(?:\.part\d+)?\.jsonl)', base) is not None

    def names(self) -> dict:
        """The file names, for the JSON."""
        base = os.path.basename
        return {'mat': base(self.mat), 'logs': {m: base(p) for m, p in self.logs.items()}, 'stats': base(self.stats)}


@dataclass
class ImageResult:
    """One certified image: its TSV row per mode, the statistics they were computed from, the samples drawn."""
    rows: Dict[str, Row]
    evidence: Optional[Dict[str, Evidence]] = None
    drawn: Optional[int] = None


class RowLimits:
    """What a logged row can hold, given the arguments that made it (edited or foreign logs are refused).

    A radius lies in [0, sigma * Phi^-1(the largest bound N samples can give)] (hard: alpha^(1/N), the
    Clopper-Pearson bound of N successes in N; soft: the Bernstein bound of N scores of 1), a prediction
    is a class or -1 (and then the radius is 0), `correct` is 1 exactly when the prediction is the label,
    and the label is the data set's (when `labels` is given). Without `num_classes` (a reader that does
    not know the data set) any class >= 0 is accepted.
    """

    def __init__(self, sigma: float, N: int, alpha: float, num_classes: Optional[int] = None,
                 labels: Optional[Sequence[int]] = None):
        self.sigma, self.alpha, self.N, self.num_classes, self.labels = sigma, alpha, N, num_classes, labels
        self.top = {'hard': largest_radius(sigma, N, alpha, 'hard'), 'soft': largest_radius(sigma, N, alpha, 'soft')}

    def check(self, row: Row, mode: str, path: str, number: int) -> None:
        top = self.top[mode]
        problem = None
        if row.idx < 0 or (self.labels is not None and row.idx >= len(self.labels)):
            problem = f'image {row.idx} is not in the test set'
        elif self.labels is not None and row.label != int(self.labels[row.idx]):
            problem = f'label {row.label} is not the label of test image {row.idx} ({int(self.labels[row.idx])})'
        elif not -1 <= row.predict < (math.inf if self.num_classes is None else self.num_classes):
            classes = 'a class' if self.num_classes is None else f'a class (0..{self.num_classes - 1})'
            problem = f'prediction {row.predict} is neither {classes} nor -1'
        elif row.correct not in (0, 1) or row.correct != int(row.predict == row.label):
            problem = f'correct is {row.correct} for prediction {row.predict} and label {row.label}'
        elif not (math.isfinite(row.radius) and 0 <= row.radius <= top * (1 + 1e-12)):
            problem = f'radius {row.radius} is outside [0, {top:.4f}], all that N = {self.N} can certify'
        elif row.predict == -1 and row.radius != 0:
            problem = f'an abstention (prediction -1) has radius {row.radius}, not 0'
        elif not (math.isfinite(row.seconds) and row.seconds >= 0):
            problem = f'time {row.seconds} is not a duration'
        if problem:
            raise UsageError(f'{path}, line {number}: {problem}; the log was edited or comes from other arguments: '
                             f'move it away (or delete the line) and rerun')


def largest_radius(sigma: float, N: int, alpha: float, mode: str = 'hard') -> float:
    """The largest radius N samples can certify at level alpha: sigma * Phi^-1 of the bound when all N agree.

    hard: alpha^(1/N) (Clopper-Pearson with nA = N; 0.80 at sigma 0.25 and N = 10000); soft: the
    Bernstein bound of N scores of 1. 0 when even that bound is below 1/2 (every image abstains).
    """
    e = Evidence('hard', 0, N, nA=N) if mode == 'hard' else Evidence('soft', 0, N, sum=float(N), sum_sq=float(N))
    bound = e.lower_bound(alpha)
    return radius(sigma, bound) if bound >= 0.5 else 0.0


# the statistics log: one JSON object per certified image, {"idx", "label", "drawn", MODE: {...}}
def evidence_line(idx: int, label: int, evidence: Dict[str, Evidence], drawn: int) -> str:
    entry: Dict[str, object] = {'idx': int(idx), 'label': int(label), 'drawn': int(drawn)}
    for mode, e in evidence.items():
        fields: Dict[str, object] = {'cAHat': e.cAHat, 'n': e.n}
        if mode == 'hard':
            fields.update(nA=e.nA, counts0=list(e.counts0 or ()))
        else:
            fields.update(sum=e.sum, sum_sq=e.sum_sq)
        if e.early:
            fields['early'] = True
        entry[mode] = fields
    return json.dumps(entry) + '\n'  # json writes floats with repr: every digit survives


def parse_evidence(text: str, path: str, modes: Sequence[str]) -> List[tuple]:
    """[(idx, label, {mode: Evidence}, drawn)] of a statistics log; a line cut short by a crash is left out."""
    lines = text.split('\n')
    if lines and lines[-1] != '':
        lines = lines[:-1]
    out = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            entry = json.loads(line)
            evidence = {}
            for m in modes:
                f = entry[m]
                if m == 'hard':
                    evidence[m] = Evidence('hard', int(f['cAHat']), int(f['n']), nA=int(f['nA']),
                                           counts0=tuple(int(c) for c in f['counts0']), early=bool(f.get('early')))
                else:
                    evidence[m] = Evidence('soft', int(f['cAHat']), int(f['n']), sum=float(f['sum']),
                                           sum_sq=float(f['sum_sq']), early=bool(f.get('early')))
            out.append((int(entry['idx']), int(entry['label']), evidence, int(entry['drawn'])))
        except (ValueError, KeyError, TypeError):
            raise UsageError(f'{path}, line {number}, is not a line of a statistics log; move the file away or '
                             f'choose another --matdir') from None
    return out


def read_results(files: ResultFiles, indices: Sequence[int], limits: RowLimits, *,
                 parts: bool = True) -> Dict[int, 'ImageResult']:
    """{idx: ImageResult} of the images the logs (and the part logs) hold in full, every row checked.

    An image counts as certified when every mode has its row (its statistics line is written first,
    so it has one too, unless the folder comes from a version without them). The same image twice
    with the same result (a job submitted twice before locks existed) is one image; with different
    results the folder mixes two runs and is refused, as is a row of an image this run does not
    certify, a row outside `limits`, or a row that its statistics line does not give.
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
                evidence.setdefault(idx, (e, drawn))
    done = {}
    for i in indices:
        if not all(i in rows[m] for m in files.modes):
            continue
        e, drawn = evidence.get(i, (None, None))
        if e is not None:
            for m in files.modes:
                if certificate(e[m], limits.sigma, limits.alpha) != (rows[m][i].predict, rows[m][i].radius):
                    raise UsageError(f'{files.logs[m]}: the row of image {i} (predict {rows[m][i].predict}, radius '
                                     f'{rows[m][i].radius}) is not what its statistics in {files.stats} give; the '
                                     f'log was edited: {fix}')
        done[i] = ImageResult({m: rows[m][i] for m in files.modes}, e, drawn)
    return done


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


def read_record(files: ResultFiles) -> Optional[dict]:
    """The JSON of the run in the folder (None when there is none); a UsageError when it is not this tool's."""
    if not os.path.lexists(files.json):
        return None
    try:
        record = json.loads(read_text(files.json, 'move it away or choose another --matdir'))
    except ValueError:
        record = None
    if not (isinstance(record, dict) and isinstance(record.get('identity'), dict)
            and record.get('status') in ('running', 'complete')):
        raise UsageError(f'{files.json} is not a result summary of this tool; move it away or choose another '
                         f'--matdir or --name')
    if 'version' not in record:  # written before 1.0.0: the identity as it would be written now
        identity = record['identity']
        identity.setdefault('early_abstain', 0)  # there was no early abstention
        args = record.get('args')
        args = args if isinstance(args, dict) else {}
        identity.setdefault('input_layer', 'normalize' if args.get('normalization') or args.get('normalize')
                            else 'none')
    return record


def check_identity(earlier: dict, identity: dict, what: str) -> None:
    """Refuse, naming up to three differences, when `identity` is not the one `what` was made with."""
    differ = differences(earlier, identity)
    if differ:
        raise UsageError(f'{what} holds results made with other arguments ({differ}); rerun with the same '
                         f'arguments to resume, or choose another --matdir or --name')


def write_record(files: ResultFiles, content: dict) -> None:
    atomic_write_text(files.json, json.dumps(jsonable(content), indent=1) + '\n')


# --- certificates recomputed from the statistics ---------------------------------------------------

def recompute(record_path: str, alpha: Optional[float] = None, bound: Optional[str] = None,
              mode: str = 'hard') -> dict:
    """A run's certificates recomputed from its statistics log at another `alpha` or with another `bound`.

    `record_path`: the run's NAME.json (its identity gives sigma, alpha, N0, N and the modes; the
    statistics are NAME.stats.jsonl beside it, the labels and times its TSV log). No sampling: the
    certificates are exactly those a fresh run with this alpha and the same seed gives (selection does
    not depend on alpha; docs/METHOD.md, "Sufficient statistics"). Images the early test abstained on
    stay abstentions: their M draws are a test, not an estimate. Returns {'rows': [Row], 'radii':
    MACER encoding, 'summary', 'recomputed': what was done and from what}.
    """
    folder, base = os.path.split(record_path)
    if not base.endswith('.json'):
        raise UsageError(f'{record_path}: give the NAME.json of a certification run of this tool')
    files_name = base[:-len('.json')]
    record = read_record(ResultFiles(folder or '.', files_name, ()))
    if record is None:
        raise UsageError(f'{record_path} does not exist')
    identity = record['identity']
    modes = modes_of(identity.get('mode', 'hard'))
    if mode not in modes:
        raise UsageError(f'{record_path} holds {" and ".join(modes)} certificates, not {mode}')
    files = ResultFiles(folder or '.', files_name, modes)
    if record.get('status') != 'complete':
        raise UsageError(f'{record_path} is a run that has not finished; finish it (rerun its command) first')
    if not os.path.exists(files.stats):
        raise UsageError(f'{files.stats} does not exist: the run was made by a version of this tool that kept no '
                         f'statistics, so it cannot be recomputed without sampling again')
    sigma, run_alpha = float(identity['sigma']), float(identity['alpha'])
    alpha = run_alpha if alpha is None else alpha
    if not 0 < alpha < 1:
        raise UsageError(f'alpha must be strictly between 0 and 1, got {alpha}')
    bound = bound or BOUNDS[mode][0]
    if bound not in BOUNDS[mode]:
        raise UsageError(f'{mode} statistics allow the bounds {", ".join(BOUNDS[mode])}, not {bound}: the soft scores '
                         f'are not 0/1 outcomes, which Clopper-Pearson needs')
    indices = range(int(identity['start_img']), int(identity['start_img']) + int(identity['num_img']) *
                    int(identity['skip']), int(identity['skip']))
    # the run's logs read as a resume reads them: every row checked, and the statistics must give the
    # run's own rows at the run's alpha (an edited statistics line or row is refused, never recomputed)
    done = read_results(files, indices, RowLimits(sigma, int(identity['N']), run_alpha), parts=False)
    evidence = {i: e for i in indices if i in done and (e := done[i].evidence) is not None}
    missing = [i for i in indices if i not in evidence]
    if missing:
        raise UsageError(f'{files.stats} lacks the statistics of {len(missing)} images (e.g. image {missing[0]}); '
                         f'it belongs to another run or was cut')
    rows = []
    for i in indices:
        logged = done[i].rows[mode]
        prediction, r = certificate(evidence[i][mode], sigma, alpha, bound)
        rows.append(Row(i, logged.label, prediction, r, int(prediction == logged.label), logged.seconds))
    radii = certified_radii([r.radius for r in rows], [r.correct for r in rows])
    early = sum(evidence[i][mode].early for i in indices)
    return {'rows': rows, 'radii': radii, 'summary': summary(radii),
            'recomputed': {'from': os.path.abspath(record_path), 'statistics': os.path.abspath(files.stats),
                           'mode': mode, 'alpha': alpha, 'bound': bound, 'run_alpha': run_alpha,
                           'run_bound': BOUNDS[mode][0], 'sigma': sigma, 'N': int(identity['N']),
                           'early_abstentions_kept': early}}
