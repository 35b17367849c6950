"""Result files: the formats of a certification's results, and their summaries (docs/FORMATS.md).

numpy and scipy only: `rs.runfiles` and `rs.recompute` write these files and `visualize/` reads them with
the same functions.

- `.mat`: key `hard` and/or `soft`, one float per image: the radius when correct, -1 when wrong or
  abstained (written by `scipy.io.savemat`, as the original, so MATLAB and Octave read it).
- TSV: header `idx label predict radius correct time`, one row per image; `predict` -1 is an
  abstention; `time` is the seconds spent on the image, written as Cohen's code writes it
  (`H:MM:SS.ffffff`); plain seconds (`15.4`) are read as well.
- the statistics log: one JSON line per image, its sufficient statistics (`rs.statslog`).
- the result JSON (a run's NAME.json, a recomputation's PREFIX.json): written as strict JSON
  (`strict_json`), read by one function (`read_result_json`), which reads an earlier format as the
  current one.

A run's files in its folder are `rs.runfiles`'s; recomputing certificates from its statistics is
`rs.recompute`'s.
"""
import datetime
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
from numpy.typing import ArrayLike

from plumbing.errors import UsageError, first_line
from plumbing.files import atomic_write, check_regular
from rs.stats import GRID, MODES, Evidence, NonFiniteCertificate, acr, certified_accuracy, certified_radii


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
    """A log's text; a UsageError naming the problem (a folder, a FIFO, unreadable, not UTF-8) and `fix`."""
    check_regular(path, fix, 'a result file' if str(path).endswith('.json') else 'a log')
    try:
        data = read_bytes(path)
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        line = 1 + data[:e.start].count(b'\n')
        raise UsageError(f'{path}, line {line}, holds bytes that are not text (UTF-8): it is not a log this tool '
                         f'wrote; {fix}') from None
    except OSError as e:
        raise UsageError(f'cannot read {path} ({e.strerror}); {fix}') from None


def read_bytes(path: str) -> bytes:
    """A file's bytes, a `.gz` file's decompressed (the published logs are shipped compressed); a UsageError
    for a `.gz` that is not gzip."""
    with open(path, 'rb') as f:
        data = f.read()
    if str(path).endswith('.gz'):
        import gzip
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UsageError(f'{path} is not a gzip file ({first_line(e)}); give the log itself or its .gz') from None
    return data


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
                value = kind(row[col].strip())
            except (ValueError, IndexError, OverflowError):
                raise UsageError(f'{path}, line {number}: column {name} does not hold a value of its kind; is it '
                                 f'a certification log?') from None
            if kind is int and not _INT_LEAST[name] <= value < 1 << 62:
                raise UsageError(f'{path}, line {number}: {name} {value} is not ' +
                                 ('an image index' if name == 'idx' else 'a class' if name == 'label' else
                                  'a class or -1' if name == 'predict' else '0 or 1') + '; the log is damaged')
            values.append(value)
        out[name] = np.array(values, dtype=np.int64 if kind is int else np.float64)
    for k, (number, _) in enumerate(body):
        r, c = out['radius'][k], out['correct'][k]
        if not (math.isfinite(r) and r >= 0):
            raise UsageError(f'{path}, line {number}: radius {r} is not a finite number >= 0; the log is damaged')
        if c not in (0, 1):
            raise UsageError(f'{path}, line {number}: correct is {c}, not 0 or 1; the log is damaged')
        if 'predict' in out and out['predict'][k] == -1 and c:
            raise UsageError(f'{path}, line {number}: an abstention (predict -1) is marked correct; the log is '
                             f'damaged')
        if 'predict' in out and 'label' in out and c != int(out['predict'][k] == out['label'][k]):
            raise UsageError(f'{path}, line {number}: correct is {c} for prediction {out["predict"][k]} and label '
                             f'{out["label"][k]}; the log is damaged')
    return out


# the least value of each integer column of a log (an image index and a label are >= 0, a prediction is a class
# or -1); every one is below 2^62, far beyond any data set, so int64 arithmetic on them never overflows
_INT_LEAST = {'idx': 0, 'label': 0, 'predict': -1, 'correct': 0}


def tsv_radii(path: str) -> np.ndarray:
    """A TSV log's radii in the MACER encoding (radius if correct, else -1)."""
    log = read_tsv(path)
    return certified_radii(log['radius'], log['correct'])


def mat_writer(radii_by_mode: Mapping[str, ArrayLike]) -> Callable[[str], None]:
    """A `write(tmp_path)` of the MACER code's `.mat`: one key per mode, float64 radii (-1 for wrong).

    Every radius must be finite: a NaN or infinity never reaches the file (NonFiniteCertificate)."""
    import scipy.io as sio
    content = {mode: np.asarray(r, dtype=np.float64) for mode, r in radii_by_mode.items()}
    for mode, r in content.items():
        if not np.isfinite(r).all():
            raise NonFiniteCertificate(f'the {mode} radii hold NaN or infinity; no .mat is written')
    return lambda tmp: sio.savemat(tmp, content)


def write_mat(path: str, radii_by_mode: Mapping[str, ArrayLike]) -> None:
    """The MACER code's `.mat` (`mat_writer`), written atomically."""
    atomic_write(path, mat_writer(radii_by_mode))


def strict_json(value, what: str, indent: Optional[int] = None) -> str:
    """`value` as strict JSON (no NaN or Infinity, which JSON does not have and other readers refuse).

    A non-finite number is a UsageError naming its key and `what` would have held it: nothing is written."""
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        raise UsageError(f'{what} would hold a number that is NaN or infinite at {_non_finite(value) or "a key"}; '
                         f'strict JSON cannot hold it, so nothing was written') from None


def _non_finite(value, path=''):
    if isinstance(value, float) and not math.isfinite(value):
        return path or 'the top'
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, v in items:
        found = _non_finite(v, f'{path}.{key}' if path else str(key))
        if found:
            return found
    return None


def read_mat(path: str) -> Dict[str, np.ndarray]:
    """The radii per mode (`hard`, `soft`) of a MACER `.mat` file, each a 1-D float64 array.

    Every value must be -1 (wrong or abstained) or a finite radius >= 0: a damaged or foreign file is
    refused with one line, never turned into a table.
    """
    import scipy.io as sio
    check_regular(path, 'give a .mat file')
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


# what a sequential run's JSON and summary say instead of an ACR
NO_ACR = ('no ACR: a sequential certification decides only the radii of its grid, so each image\'s radius column '
          'is the largest grid radius it certified, not its certified radius, and an average of those would '
          'understate the ACR by an amount that depends on the grid')


def summary(radii, grid=GRID, sequential: bool = False) -> dict:
    """Certified accuracy on `grid`, counts and ACR of one mode's radii (MACER encoding). `sequential`: the
    radii are a sequential run's (grid radii only; `grid` is its grid): no ACR, and a note saying why."""
    radii = np.asarray(radii, dtype=np.float64)
    acc = certified_accuracy(radii, grid)
    out = {'num_img': int(radii.size),
           'radius': [float(r) for r in grid],
           'number': [int(round(a * radii.size)) for a in acc],
           'accuracy': [float(a) for a in acc],
           'acr': None if sequential else acr(radii)}
    if sequential:
        out['acr_note'] = NO_ACR
    return out


def format_summary(radii_by_mode, grid=GRID, sequential: bool = False) -> str:
    """The public MACER code's certification summary: the image count, then a block per mode (`sequential`:
    at the run's grid, without the ACR, which such a run does not give)."""
    lines = ['===Certify Summary===']
    for i, (mode, radii) in enumerate(radii_by_mode.items()):
        s = summary(radii, grid, sequential)
        if i == 0:
            lines.append(f'Total Image Number: {s["num_img"]}')
        if len(radii_by_mode) > 1:
            lines.append(f'==={mode.capitalize()} certify===')
        for r, number in zip(s['radius'], s['number']):
            # the public code prints number / total * 100; rounded, so 57 of 100 reads 57.0, not 56.99999999999999
            lines.append(f'Radius: {r}  Number: {number}  Acc: {round(number / s["num_img"] * 100, 10)}')
        lines.append(f'ACR: {s["acr"]}' if not sequential else f'ACR: none ({NO_ACR})')
    return '\n'.join(lines)


@dataclass
class ImageResult:
    """One certified image: its TSV row per mode, the statistics they were computed from, the samples drawn."""
    rows: Dict[str, Row]
    evidence: Optional[Dict[str, Evidence]] = None
    drawn: Optional[int] = None


# --- the result JSON ---------------------------------------------------------------------------------

def read_result_json(path: str, fix: str) -> Optional[dict]:
    """The one reader of this tool's result JSON (a run's NAME.json, a recomputation's PREFIX.json): the
    parsed object, None when the file holds no JSON object, a UsageError naming `fix` when it cannot be
    read as text (`read_text`: a folder, unreadable, not UTF-8).

    A run's JSON (`is_run_record`) of an earlier format is read as the current one: an identity written
    before 1.0.0 gets the keys added since, and a hard-mode identity loses `beta` (hard certificates do
    not depend on it; `identity_key`). What else a reader needs of the record, and what it says when
    that is not there, is the reader's."""
    try:
        record = json.loads(read_text(path, fix))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if is_run_record(record):
        if 'version' not in record:  # written before 1.0.0: the identity as it would be written now
            identity = record['identity']
            identity.setdefault('early_abstain', 0)  # there was no early abstention
            args = record.get('args')
            args = args if isinstance(args, dict) else {}
            identity.setdefault('input_layer', 'normalize' if args.get('normalization') or args.get('normalize')
                                else 'none')
        record['identity'] = identity_key(record['identity'])
    return record


def is_run_record(record: dict) -> bool:
    """Whether a parsed result JSON is the JSON of a certification run of this tool (running or complete)."""
    return (isinstance(record.get('identity'), dict) and record.get('status') in ('running', 'complete')
            and isinstance(record.get('without_statistics', []), list)
            and all(isinstance(i, int) for i in record.get('without_statistics', []))
            and isinstance(record.get('sha256', {}), dict))


def identity_key(identity: dict) -> dict:
    """The identity as compared: without `beta` in hard mode, where the certificates do not depend on it
    (earlier versions recorded it there too)."""
    if identity.get('mode') == 'hard':
        return {k: v for k, v in identity.items() if k != 'beta'}
    return dict(identity)
