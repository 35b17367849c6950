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
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np
from numpy.typing import ArrayLike

from plumbing.errors import UsageError, first_line
from plumbing.files import atomic_write, atomic_write_text
from plumbing.outputs import output_folder, text_writer, write_together
from plumbing.records import VERSION, differences
from rs.stats import BOUNDS, GRID, MODES, Evidence, NoEstimate, NonFiniteCertificate, acr, certificates, \
    certified_accuracy, certified_radii, check_alpha, early_test_abstains, modes_of, radius

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
                with open(os.path.join(folder, base), encoding='utf-8') as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if not (isinstance(record, dict) and ('identity' in record or 'status' in record)):
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
            with open(files.json, encoding='utf-8') as f:
                listed = json.load(f).get('files')
            for value in (listed or {}).values():
                for base in (value.values() if isinstance(value, dict) else [value]):
                    if isinstance(base, str):
                        owned.setdefault(os.path.basename(base), name)
        except (OSError, ValueError, AttributeError):
            pass
    return owned


RECOMPUTED = ('.tsv', '.mat', '.json')  # the files of a recomputation, PREFIX + each


def check_output_prefix(prefix: str) -> List[str]:
    """The files of a recomputation written to `prefix` (PREFIX.tsv, .mat, .json), or a UsageError.

    Refused: a prefix without a file name (`''`, `DIR/`) or with a hidden one (hidden names are this
    tool's locks and temporaries), and any whose files would replace a file of a certification run in
    that folder (`run_files_in`: its own files or another run's), or a JSON that is not a recomputation's."""
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
    if os.path.lexists(paths[2]):
        try:
            with open(paths[2], encoding='utf-8') as f:
                earlier = json.load(f)
        except (OSError, ValueError):
            earlier = None
        if not (isinstance(earlier, dict) and 'recomputed' in earlier):
            raise UsageError(f'--out {prefix} would replace {paths[2]}, which is not the result of a recomputation; '
                             f'choose another --out')
    return [os.path.join(os.path.dirname(os.path.abspath(prefix)), base + suffix) for suffix in RECOMPUTED]


@dataclass
class ImageResult:
    """One certified image: its TSV row per mode, the statistics they were computed from, the samples drawn."""
    rows: Dict[str, Row]
    evidence: Optional[Dict[str, Evidence]] = None
    drawn: Optional[int] = None


class RowLimits:
    """What a run's own files can hold, given the arguments that made it (edited or foreign logs are refused).

    Rows (`check`): a radius lies in [0, sigma * Phi^-1(the largest bound N samples can give)] (hard:
    alpha^(1/N), the Clopper-Pearson bound of N successes in N; soft: the Bernstein bound of N scores of
    1), a prediction is a class or -1 (and then the radius is 0), `correct` is 1 exactly when the
    prediction is the label, and the label is a class and the data set's (when `labels` is given).
    Without `num_classes` (a reader that does not know the data set) any class >= 0 is accepted.
    Statistics (`check_image`): see there; `N0` and `early_abstain` (M) are the run's.
    """

    def __init__(self, sigma: float, N: int, alpha: float, num_classes: Optional[int] = None,
                 labels: Optional[Sequence[int]] = None, N0: Optional[int] = None, early_abstain: int = 0):
        self.sigma, self.alpha, self.N, self.num_classes, self.labels = sigma, alpha, N, num_classes, labels
        self.N0, self.M = N0, int(early_abstain or 0)
        self.top = {'hard': largest_radius(sigma, N, alpha, 'hard'), 'soft': largest_radius(sigma, N, alpha, 'soft')}

    @classmethod
    def of(cls, identity: dict, num_classes: Optional[int] = None, labels: Optional[Sequence[int]] = None,
           alpha: Optional[float] = None) -> 'RowLimits':
        """The limits of the run with this identity (its JSON's)."""
        return cls(float(identity['sigma']), int(identity['N']), float(identity['alpha'] if alpha is None else alpha),
                   num_classes, labels, int(identity['N0']), int(identity.get('early_abstain') or 0))

    def check(self, row: Row, mode: str, path: str, number: int) -> None:
        top = self.top[mode]
        classes = math.inf if self.num_classes is None else self.num_classes
        problem = None
        if row.idx < 0 or (self.labels is not None and row.idx >= len(self.labels)):
            problem = f'image {row.idx} is not in the test set'
        elif not 0 <= row.label < classes:
            problem = f'label {row.label} is not a class' + ('' if self.num_classes is None else
                                                              f' (0..{self.num_classes - 1})')
        elif self.labels is not None and row.label != int(self.labels[row.idx]):
            problem = f'label {row.label} is not the label of test image {row.idx} ({int(self.labels[row.idx])})'
        elif not -1 <= row.predict < classes:
            what = 'a class' if self.num_classes is None else f'a class (0..{self.num_classes - 1})'
            problem = f'prediction {row.predict} is neither {what} nor -1'
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

    def statistics_problem(self, idx: int, label: int, evidence: Dict[str, Evidence], drawn: int,
                           rows: Dict[str, Row]) -> Optional[str]:
        """What is wrong with image `idx`'s statistics line, given its rows (None when nothing is).

        The line must be one this run could have written: per mode the selected class is a class, and
        in hard mode the argmax (np.argmax's rule: the first of equal counts) of the N0 selection counts
        `counts0`, one per class, summing to N0; n is N (M for an early abstention); 0 <= nA <= n; the
        soft sums lie in what n scores in [0, 1] can give (0 <= sum <= n, sum^2 / n <= sum_sq <= sum);
        the early test's statistics are there exactly when the run made one (M > 0), with M draws, and
        its decision at the run's alpha is the one logged; `drawn` is N0 + M + N, less N when the test
        abstained; the label is the rows'; and the rows are the certificates the statistics give.
        """
        classes = self.num_classes
        if any(r.label != label for r in rows.values()):
            m, r = next((m, r) for m, r in rows.items() if r.label != label)
            return f'the label {label} of its statistics is not the label {r.label} of its row in the {m} log'
        early = {e.early for e in evidence.values()}
        if len(early) > 1:
            return 'its statistics are an early abstention in one mode and not in another'
        abstained = early.pop()
        if (abstained or any(e.early_test is not None for e in evidence.values())) and self.M <= 0:
            return 'its statistics hold an early test, but the run made none (early_abstain 0)'
        for m, e in evidence.items():
            if e.mode != m:
                return f'its statistics hold {e.mode} statistics under "{m}"'
            if m == 'hard':
                counts0 = e.counts0 or ()
                if classes is None:
                    classes = len(counts0)
                if len(counts0) != classes or any(c < 0 for c in counts0):
                    return f'its selection counts counts0 are {len(counts0)} counts >= 0, not one per class ({classes})'
                if self.N0 is not None and sum(counts0) != self.N0:
                    return f'its selection counts counts0 sum to {sum(counts0)}, not N0 = {self.N0}'
                if e.cAHat != int(np.argmax(counts0)):
                    return (f'its selected class cAHat {e.cAHat} is not the most frequent of its selection counts '
                            f'({int(np.argmax(counts0))})')
            if not (0 <= e.cAHat and (classes is None or e.cAHat < classes)):
                return f'its selected class cAHat {e.cAHat} ({m}) is not a class'
            n_wanted = self.M if e.early else self.N
            problem = _sample_problem(e, n_wanted, 'M' if e.early else 'N')
            if problem:
                return problem
            if e.early_test is not None:
                t = e.early_test
                if t.mode != m or t.cAHat != e.cAHat:
                    return 'its early test is of another class'
                problem = _sample_problem(t, self.M, 'M')
                if problem:
                    return 'in its early test, ' + problem
        if self.N0 is not None:
            wanted = self.N0 + self.M + (0 if abstained else self.N)
            if drawn != wanted:
                less = ', less N' if abstained else ''
                return f'{drawn} samples are said to be drawn, not {wanted} (N0 + M + N{less})'
        modes = tuple(rows)
        try:
            given = certificates([evidence[m] for m in modes], self.sigma, self.alpha)
        except NoEstimate:
            return f'its early abstention is not what the early test gives at the run\'s alpha {self.alpha:g}'
        except NonFiniteCertificate as e:
            return f'its statistics give no finite certificate ({e})'
        for m, (prediction, radius_) in zip(modes, given):
            if (prediction, radius_) != (rows[m].predict, rows[m].radius):
                return (f'its row in the {m} log (predict {rows[m].predict}, radius {rows[m].radius}) is not what its '
                        f'statistics give (predict {prediction}, radius {radius_})')
        return None


def _sample_problem(e: Evidence, n_wanted: int, name: str) -> Optional[str]:
    """What is wrong with the statistics of one set of draws (n, nA or the sums), None when nothing is."""
    if e.n != n_wanted:
        return f'n is {e.n} ({e.mode}), not {name} = {n_wanted}'
    if e.mode == 'hard':
        if e.nA is None or not 0 <= e.nA <= e.n:
            return f'nA is {e.nA}, outside [0, n = {e.n}]'
        return None
    s, q = e.sum, e.sum_sq
    if s is None or q is None or not (math.isfinite(s) and math.isfinite(q)):
        return f'the soft sums {s}, {q} are not finite numbers'
    slack = 1e-9 * max(e.n, 1)  # the sums add float32 scores in float64: rounding, never more
    if not -slack <= s <= e.n + slack:
        return f'the soft sum {s} is outside [0, n = {e.n}]'
    if not (s * s / max(e.n, 1)) * (1 - 1e-6) - slack <= q <= s + slack:
        return f'the sum of squares {q} is not one that scores in [0, 1] summing to {s} can give'
    return None


def largest_radius(sigma: float, N: int, alpha: float, mode: str = 'hard') -> float:
    """The largest radius N samples can certify at level alpha: sigma * Phi^-1 of the bound when all N agree.

    hard: alpha^(1/N) (Clopper-Pearson with nA = N; 0.80 at sigma 0.25 and N = 10000); soft: the
    Bernstein bound of N scores of 1. 0 when even that bound is below 1/2 (every image abstains).
    """
    e = Evidence('hard', 0, N, nA=N) if mode == 'hard' else Evidence('soft', 0, N, sum=float(N), sum_sq=float(N))
    bound = e.lower_bound(alpha)
    return radius(sigma, bound) if bound >= 0.5 else 0.0


# the statistics log: one JSON object per certified image, {"idx", "label", "drawn", MODE: {...}}
def _draws(e: Evidence) -> Dict[str, object]:
    return {'n': e.n, 'nA': e.nA} if e.mode == 'hard' else {'n': e.n, 'sum': e.sum, 'sum_sq': e.sum_sq}


def evidence_line(idx: int, label: int, evidence: Dict[str, Evidence], drawn: int) -> str:
    entry: Dict[str, object] = {'idx': int(idx), 'label': int(label), 'drawn': int(drawn)}
    for mode, e in evidence.items():
        fields: Dict[str, object] = {'cAHat': e.cAHat, **_draws(e)}
        if mode == 'hard':
            fields['counts0'] = list(e.counts0 or ())
        if e.early:
            fields['early'] = True
        if e.early_test is not None:
            fields['early_test'] = _draws(e.early_test)
        entry[mode] = fields
    # json writes floats with repr: every digit survives; never NaN (JSON has none)
    return strict_json(entry, f'the statistics of image {idx}') + '\n'


def _integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return float(value)


def _parse_draws(mode: str, cAHat: int, f: dict, counts0, early: bool = False) -> Evidence:
    if mode == 'hard':
        return Evidence('hard', cAHat, _integer(f['n']), nA=_integer(f['nA']), counts0=counts0, early=early)
    return Evidence('soft', cAHat, _integer(f['n']), sum=_number(f['sum']), sum_sq=_number(f['sum_sq']), early=early)


def parse_evidence(text: str, path: str, modes: Sequence[str]) -> List[tuple]:
    """[(idx, label, {mode: Evidence}, drawn)] of a statistics log; a line cut short by a crash is left out.

    Every value must have its type (a count an integer, a sum a number): a line that does not is refused."""
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
                cAHat = _integer(f['cAHat'])
                counts0 = tuple(_integer(c) for c in f['counts0']) if m == 'hard' else None
                if not isinstance(f.get('early', False), bool):
                    raise TypeError
                e = _parse_draws(m, cAHat, f, counts0, bool(f.get('early')))
                if 'early_test' in f:
                    e = Evidence(**{**e.__dict__, 'early_test': _parse_draws(m, cAHat, f['early_test'], counts0)})
                evidence[m] = e
            out.append((_integer(entry['idx']), _integer(entry['label']), evidence, _integer(entry['drawn'])))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f'{path}, line {number}, is not a line of a statistics log; move the file away or '
                             f'choose another --matdir') from None
    return out


def read_results(files: ResultFiles, indices: Sequence[int], limits: RowLimits, *, parts: bool = True,
                 without_statistics: Optional[FrozenSet[int]] = frozenset(),
                 complete: bool = False) -> Dict[int, 'ImageResult']:
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
    """The JSON of the run in the folder (None when there is none); a UsageError when it is not this tool's.

    An earlier format is read as the current one: an identity written before 1.0.0 gets the keys added
    since, and a hard-mode identity loses `beta` (hard certificates do not depend on it; `identity_key`)."""
    if not os.path.lexists(files.json):
        return None
    try:
        record = json.loads(read_text(files.json, 'move it away or choose another --matdir'))
    except ValueError:
        record = None
    if not (isinstance(record, dict) and isinstance(record.get('identity'), dict)
            and record.get('status') in ('running', 'complete')
            and isinstance(record.get('without_statistics', []), list)
            and all(isinstance(i, int) for i in record.get('without_statistics', []))
            and isinstance(record.get('sha256', {}), dict)):
        raise UsageError(f'{files.json} is not a result summary of this tool; move it away or choose another '
                         f'--matdir or --name')
    if 'version' not in record:  # written before 1.0.0: the identity as it would be written now
        identity = record['identity']
        identity.setdefault('early_abstain', 0)  # there was no early abstention
        args = record.get('args')
        args = args if isinstance(args, dict) else {}
        identity.setdefault('input_layer', 'normalize' if args.get('normalization') or args.get('normalize')
                            else 'none')
    record['identity'] = identity_key(record['identity'])
    return record


def identity_key(identity: dict) -> dict:
    """The identity as compared: without `beta` in hard mode, where the certificates do not depend on it
    (earlier versions recorded it there too)."""
    if identity.get('mode') == 'hard':
        return {k: v for k, v in identity.items() if k != 'beta'}
    return dict(identity)


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


# --- certificates recomputed from the statistics ---------------------------------------------------

class RecomputationLog:
    """NAME.recomputations.jsonl: one JSON object per recomputation made from a run's statistics.

    Choosing alpha or the bound after looking at results weakens the guarantee, so every recomputation
    is recorded, and each lists the ones before it. Used as a context manager: an exclusive lock on the
    file (flock, waited for), so recomputations of one run are made one after the other and each sees
    every earlier one."""

    def __init__(self, files: ResultFiles):
        self.path = files.recomputations
        self.file: Optional[TextIO] = None

    def __enter__(self) -> 'RecomputationLog':
        import fcntl
        try:
            self.file = open(self.path, 'a+', encoding='utf-8')
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
        except OSError as e:
            if self.file is not None:
                self.file.close()
            raise UsageError(f'cannot record the recomputation in {self.path} ({e.strerror}): every recomputation of '
                             f'a run is recorded beside it; copy the run (its JSON, logs and statistics) to a folder '
                             f'you can write to') from None
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # and with it the lock
            self.file = None

    def entries(self) -> List[dict]:
        assert self.file is not None
        self.file.seek(0)
        out = []
        for number, line in enumerate(self.file.read().split('\n'), start=1):
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
        return out

    def append(self, entry: dict) -> None:
        assert self.file is not None
        self.file.write(strict_json(entry, self.path) + '\n')
        self.file.flush()
        os.fsync(self.file.fileno())


def effective_alpha(looks: Sequence[Tuple[str, str, float]]) -> float:
    """The failure probability of a result chosen after these looks ((mode, bound, alpha) each), all together.

    Certificates of one mode and bound at several alphas are nested (a larger alpha only raises the
    lower bound), so together they fail with probability at most the largest alpha; different modes or
    bounds add up (a union bound)."""
    largest: Dict[Tuple[str, str], float] = {}
    for mode, bound, alpha in looks:
        largest[(mode, bound)] = max(alpha, largest.get((mode, bound), 0.0))
    return float(sum(largest.values()))


def _run_indices(identity: dict) -> range:
    start, num, skip = int(identity['start_img']), int(identity['num_img']), int(identity['skip'])
    return range(start, start + num * skip, skip)


def recompute(record_path: str, alpha: Optional[float] = None, bound: Optional[str] = None,
              mode: Optional[str] = None, out: Optional[str] = None) -> dict:
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
    OUT.tsv, OUT.mat and OUT.json as one set (`common.write_together`), never over a run's files
    (`check_output_prefix`). Returns {'rows': [Row], 'radii': MACER encoding, 'summary', 'recomputed':
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
    outputs = check_output_prefix(out) if out is not None else None
    if not os.path.exists(files.stats):
        raise UsageError(f'{files.stats} does not exist: the run was made by a version of this tool that kept no '
                         f'statistics, so it cannot be recomputed without sampling again')
    for path in files.logs.values():
        if not os.path.exists(path):
            raise UsageError(f'{path} does not exist, but the finished run wrote it; restore it, or certify again')
    indices = _run_indices(identity)
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
    rows, early_now = _recomputed_rows(done, evidence, modes.index(mode), sigma, alpha, bound, run_alpha)
    radii = certified_radii([r.radius for r in rows], [r.correct for r in rows])
    early_kept = sum(1 for i in indices if evidence[i][0].early)
    written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    entry = {'alpha': alpha, 'bound': bound, 'mode': mode, 'out': None if out is None else os.path.abspath(out),
             'written': written, 'version': VERSION}
    dataset = identity.get('dataset') or 'data set\'s'
    with RecomputationLog(files) as history:
        earlier = history.entries()
        # the run's own certificates were fixed before anything was looked at: they keep their 1 - alpha
        own = (alpha, bound) == (run_alpha, BOUNDS[mode][0])
        looks = [(mode, bound, alpha)] if own else [(m, BOUNDS[m][0], run_alpha) for m in modes] + \
            [(e.get('mode', mode), e.get('bound', ''), float(e['alpha'])) for e in earlier] + [(mode, bound, alpha)]
        recomputed = {
            'from': os.path.abspath(record_path), 'statistics': os.path.abspath(files.stats), 'mode': mode,
            'alpha': alpha, 'bound': bound, 'run_alpha': run_alpha, 'run_bound': BOUNDS[mode][0], 'sigma': sigma,
            'N': int(identity['N']), 'early_abstain': M, 'early_abstentions_kept': early_kept,
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
        result = {'rows': rows, 'radii': radii, 'summary': summary(radii), 'recomputed': recomputed}
        if outputs is not None:
            output_folder(out)
            content = {'version': VERSION, 'recomputed': recomputed, 'summary': {mode: result['summary']}}
            write_together([(outputs[0], text_writer(header_line() + ''.join(r.line() for r in rows))),
                            (outputs[1], mat_writer({mode: radii})),
                            (outputs[2], text_writer(strict_json(content, outputs[2], indent=1) + '\n'))],
                           f'the recomputation {out}.*')
        history.append(entry)
    return result


def _recomputed_rows(done: Dict[int, ImageResult], evidence: Dict[int, Tuple[Evidence, ...]], column: int,
                     sigma: float, alpha: float, bound: str, run_alpha: float) -> Tuple[List[Row], int]:
    """Each image's row at `alpha` (the mode in `column` of its evidence; labels and times as logged), and how
    many images the early test abstains on there; a UsageError where no row can equal a fresh run's."""
    rows = []
    early_now = 0
    for i, e_i in evidence.items():
        tests = [t for e in e_i if (t := e.test_statistics()) is not None]
        early_now += len(tests) == len(e_i) and early_test_abstains(tests, alpha)
        logged = done[i].rows[e_i[column].mode]
        try:
            prediction, r = certificates(e_i, sigma, alpha, bound)[column]
        except NoEstimate as e:
            raise UsageError(f'image {i} cannot be recomputed at alpha {alpha:g}: {e}, so a fresh run would draw its '
                             f'N estimation samples and none were kept; certify again with --alpha {alpha:g}, or '
                             f'recompute at an alpha at which the early test abstains on it (e.g. the run\'s, '
                             f'{run_alpha:g})') from None
        except NonFiniteCertificate as e:
            raise UsageError(f'image {i} has no finite certificate at alpha {alpha:g} ({e}); choose another alpha') \
                from None
        rows.append(Row(i, logged.label, prediction, r, int(prediction == logged.label), logged.seconds))
    return rows, early_now
