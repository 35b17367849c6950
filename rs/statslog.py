"""The statistics log (NAME.stats.jsonl): one JSON object per certified image, {"idx", "label", "drawn",
MODE: {...}}, holding the sufficient statistics every certificate of the image was computed from
(docs/FORMATS.md). Written line by line as images are certified, read back by resume, recomputation
and analysis; numpy and scipy only, as `rs.results`.
"""
import json
from typing import Dict, List, Sequence

from plumbing.errors import UsageError
from rs.results import strict_json
from rs.stats import Evidence


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
        if e.looks is not None:
            fields['looks'] = [int(c) for c in e.looks]
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
                if 'looks' in f:
                    if m != 'hard' or not isinstance(f['looks'], list) or not f['looks']:
                        raise TypeError
                    e = Evidence(**{**e.__dict__, 'looks': tuple(_integer(c) for c in f['looks'])})
                evidence[m] = e
            out.append((_integer(entry['idx']), _integer(entry['label']), evidence, _integer(entry['drawn'])))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f'{path}, line {number}, is not a line of a statistics log; move the file away or '
                             f'choose another --matdir') from None
    return out
