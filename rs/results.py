"""Result files: the MACER code's `.mat` and the community's TSV certification logs (PAPER.md section 6).

numpy and scipy only: `rs.certify` writes these files and `visualize/` reads them with the same
functions.

- `.mat`: key `hard` and/or `soft`, one float per image: the radius when correct, -1 when wrong or
  abstained (written by `scipy.io.savemat`, as the original, so MATLAB and Octave read it).
- TSV: header `idx label predict radius correct time`, one row per image; `predict` -1 is an
  abstention; `time` is the seconds spent on the image, written as Cohen's code writes it
  (`H:MM:SS.ffffff`); plain seconds (`15.4`) are read as well.
"""
import datetime
import re
from dataclasses import dataclass

import numpy as np

from common import UsageError, atomic_write
from rs.stats import GRID, acr, certified_accuracy, certified_radii

TSV_HEADER = ('idx', 'label', 'predict', 'radius', 'correct', 'time')
MODES = ('hard', 'soft')


@dataclass(frozen=True)
class Row:
    """One certified image, as a TSV row."""
    idx: int
    label: int
    predict: int
    radius: float
    correct: int
    seconds: float

    def line(self):
        # repr keeps every digit, so the .mat rebuilt from a log equals the one computed in memory
        return (f'{self.idx}\t{self.label}\t{self.predict}\t{float(self.radius)!r}\t{self.correct}\t'
                f'{format_seconds(self.seconds)}\n')


def format_seconds(seconds):
    return str(datetime.timedelta(seconds=float(seconds)))


_TIMEDELTA = re.compile(r'^(?:(-?\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$')


def parse_seconds(text):
    """Seconds from `H:MM:SS[.f]` (Cohen's code, Salman's logs), `N day(s), H:MM:SS` or plain seconds."""
    m = _TIMEDELTA.match(text.strip())
    if m:
        days, h, mi, s = m.groups()
        return (int(days or 0) * 86400) + int(h) * 3600 + int(mi) * 60 + float(s)
    return float(text)


def header_line():
    return '\t'.join(TSV_HEADER) + '\n'


def parse_log(text, path):
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
            idx, label, predict, radius, correct, seconds = fields
            rows.append(Row(int(idx), int(label), int(predict), float(radius), int(correct), parse_seconds(seconds)))
        except ValueError:
            raise UsageError(f'{path}, line {number}, is not a row of a certification log; '
                             f'move the file away or choose another --matdir') from None
    return rows


def read_tsv(path):
    """Any community TSV log (Cohen, Salman, this project) as a dict of numpy arrays by column.

    Columns are found by their header names, so extra columns are ignored. `correct` is kept as
    written: a wrong prediction can carry a positive radius (PAPER.md section 6).
    """
    try:
        with open(path) as f:
            header = f.readline().rstrip('\n').split('\t')
            body = [line.rstrip('\n').split('\t') for line in f if line.strip()]
    except OSError as e:
        raise UsageError(f'cannot read {path} ({e.strerror})') from None
    except UnicodeDecodeError:
        raise UsageError(f'{path} is not a text TSV log') from None
    header = [h.strip() for h in header]
    missing = [c for c in ('radius', 'correct') if c not in header]
    if missing:
        raise UsageError(f'{path} is not a certification log: no column {" or ".join(missing)} in its header '
                         f'(expected "{" ".join(TSV_HEADER)}")')
    out = {}
    try:
        for name, kind in (('idx', int), ('label', int), ('predict', int), ('radius', float), ('correct', int),
                           ('time', parse_seconds)):
            if name in header:
                col = header.index(name)
                out[name] = np.array([kind(row[col]) for row in body],
                                     dtype=np.float64 if kind is not int else np.int64)
    except (ValueError, IndexError):
        raise UsageError(f'{path}: a row does not match its header (column {name}); is it a certification log?') \
            from None
    return out


def tsv_radii(path):
    """A TSV log's radii in the MACER encoding (radius if correct, else -1)."""
    log = read_tsv(path)
    return certified_radii(log['radius'], log['correct'])


def write_mat(path, radii_by_mode):
    """The MACER code's `.mat`: one key per mode, float64 radii (-1 for wrong), written atomically."""
    import scipy.io as sio
    content = {mode: np.asarray(r, dtype=np.float64) for mode, r in radii_by_mode.items()}
    atomic_write(path, lambda tmp: sio.savemat(tmp, content))


def read_mat(path):
    """The radii per mode (`hard`, `soft`) of a MACER `.mat` file, each a 1-D float64 array."""
    import scipy.io as sio
    try:
        content = sio.loadmat(path)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f'cannot read {path} as a .mat file ({str(e).splitlines()[0] if str(e) else e})') from None
    found = {m: np.asarray(content[m], dtype=np.float64).reshape(-1) for m in MODES if m in content}
    if not found:
        keys = [k for k in content if not k.startswith('__')]
        raise UsageError(f'{path} has no key "hard" or "soft" (it has {", ".join(keys) or "none"}); '
                         f'is it a MACER result file?')
    return found


def summary(radii, grid=GRID):
    """Certified accuracy on `grid`, counts and ACR of one mode's radii (MACER encoding)."""
    radii = np.asarray(radii, dtype=np.float64)
    acc = certified_accuracy(radii, grid)
    return {'num_img': int(radii.size),
            'radius': [float(r) for r in grid],
            'number': [int(round(a * radii.size)) for a in acc],
            'accuracy': [float(a) for a in acc],
            'acr': acr(radii)}


def format_summary(radii_by_mode, grid=GRID):
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
