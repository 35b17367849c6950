"""Job arrays: `--shard I/K` certifies slice I of K into a folder of its own, `visualize/merge.py` joins the K
shards into the run a single process writes on the same images (file by file, the time column aside), and
refuses a missing, repeated or foreign shard, naming it."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import scipy.io

from conftest import certify_digits
from plumbing.errors import UsageError
from rs.merge import merge
from rs.runs import read_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTING = dict(num_img=9, skip=13, N=300, N0=50)


def _shards(tmp_path, K=3, mode='hard', extra=(), **setting):
    folders = []
    for i in range(1, K + 1):
        folder = tmp_path / f'shard-{i}'
        certify_digits(folder, 'run', mode=mode, extra=('--shard', f'{i}/{K}', *extra), **dict(SETTING, **setting))
        folders.append(str(folder))
    return folders


def _untimed(text):
    """A log without its time column (each row's own wall time, wherever it ran)."""
    lines = text.splitlines()
    time = lines[0].split('\t').index('time')
    return [[c for j, c in enumerate(line.split('\t')) if j != time] for line in lines]


def _same_run(single, merged, modes):
    for mode in modes:
        assert _untimed((single / f'run.{mode}.tsv').read_text()) == _untimed((merged / f'run.{mode}.tsv').read_text())
    assert (single / 'run.stats.jsonl').read_bytes() == (merged / 'run.stats.jsonl').read_bytes()
    a, b = scipy.io.loadmat(str(single / 'run.mat')), scipy.io.loadmat(str(merged / 'run.mat'))
    keys = sorted(k for k in a if not k.startswith('__'))
    assert keys == sorted(k for k in b if not k.startswith('__'))
    for k in keys:
        assert (a[k] == b[k]).all(), k
    one, joined = (json.loads((f / 'run.json').read_text()) for f in (single, merged))
    assert one['identity'] == joined['identity'] and one['summary'] == joined['summary']
    assert one['samples'] == joined['samples'] and one['status'] == joined['status'] == 'complete'
    assert one.get('radius_column') == joined.get('radius_column')
    assert [m['shard'] for m in joined['merged_from']] == [[i, 3] for i in (1, 2, 3)]
    read_run(str(merged / 'run.json'), sequential=True)  # a reader takes it as it takes the single run


@pytest.mark.parametrize('mode, extra', [('both', ()), ('hard', ('--radii', '0.25', '0.5'))],
                         ids=['certify-both', 'sequential'])
def test_three_shards_merged_equal_one_process(tmp_path, mode, extra):
    folders = _shards(tmp_path, mode=mode, extra=extra)
    certify_digits(tmp_path / 'single', 'run', mode=mode, extra=extra, **SETTING)
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'visualize', 'merge.py'), *folders, '--out',
                        str(tmp_path / 'merged')], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert 'merged 3 shards' in p.stdout
    modes = ('hard', 'soft') if mode == 'both' else ('hard',)
    _same_run(tmp_path / 'single', tmp_path / 'merged', modes)
    # the merged run is the single process's run: its command resumes it, with nothing left to do
    before = (tmp_path / 'merged' / 'run.stats.jsonl').read_bytes()
    certify_digits(tmp_path / 'merged', 'run', mode=mode, extra=extra, **SETTING)
    assert (tmp_path / 'merged' / 'run.stats.jsonl').read_bytes() == before
    # the shards are untouched, and merging again into the same folder is refused, writing nothing
    with pytest.raises(UsageError, match='already holds files of a run'):
        merge(folders, str(tmp_path / 'merged'))


def test_refusals_name_the_shard(tmp_path):
    folders = _shards(tmp_path)
    sums = {f: {n: open(os.path.join(f, n), 'rb').read() for n in os.listdir(f)} for f in folders}
    out = str(tmp_path / 'out')
    with pytest.raises(UsageError, match='slice 2 of 3 is missing'):
        merge([folders[0], folders[2]], out)
    with pytest.raises(UsageError, match=r'shard-1.*both slice 1 of 3|both slice 1 of 3.*shard-1'):
        merge([folders[0], folders[0], folders[1], folders[2]], out)
    # a shard of another certification (another seed): refused, naming it and the key
    certify_digits(tmp_path / 'other', 'run', extra=('--shard', '2/3', '--seed', '7'), **SETTING)
    with pytest.raises(UsageError, match=r'other/run.json is a shard of another certification.*seed'):
        merge([folders[0], str(tmp_path / 'other'), folders[2]], out)
    # a slice of another cut
    certify_digits(tmp_path / 'four', 'run', extra=('--shard', '2/4'), **SETTING)
    with pytest.raises(UsageError, match=r'four/run.json is slice 2 of 4'):
        merge([folders[0], str(tmp_path / 'four'), folders[2]], out)
    # not a shard at all
    certify_digits(tmp_path / 'whole', 'run', **SETTING)
    with pytest.raises(UsageError, match=r'whole/run.json is not a shard'):
        merge([str(tmp_path / 'whole')] + folders, out)
    # --out is a shard's folder
    with pytest.raises(UsageError, match='is the folder of a shard'):
        merge(folders, folders[1])
    # a shard cut short (its JSON still running, a row lost): refused as a reader refuses it
    cut = tmp_path / 'cut'
    shutil.copytree(folders[1], cut)
    record = json.loads((cut / 'run.json').read_text())
    (cut / 'run.json').write_text(json.dumps(dict({k: v for k, v in record.items() if k not in
                                                   ('summary', 'sha256', 'seconds', 'samples')}, status='running')))
    with pytest.raises(UsageError, match='cut/run.json'):
        merge([folders[0], str(cut), folders[2]], out)
    # an edited row: refused, naming the file
    edited = tmp_path / 'edited'
    shutil.copytree(folders[2], edited)
    log = (edited / 'run.hard.tsv').read_text().splitlines(keepends=True)
    cells = log[1].split('\t')
    cells[3] = '0.9'
    (edited / 'run.hard.tsv').write_text(''.join([log[0], '\t'.join(cells)] + log[2:]))
    with pytest.raises(UsageError, match='edited/run'):
        merge([folders[0], folders[1], str(edited)], out)
    assert not os.path.exists(out) or not os.listdir(out)  # nothing written by any refusal
    assert {f: {n: open(os.path.join(f, n), 'rb').read() for n in os.listdir(f)} for f in folders} == sums
    # from the command line: one line, exit 2, no traceback
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'visualize', 'merge.py'), folders[0], '--out', out],
                       capture_output=True, text=True)
    assert p.returncode == 2 and 'slice 2 of 3 is missing' in p.stderr and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
