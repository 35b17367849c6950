"""`main.py --task test` end to end on `digits`: files agree, and an interrupted run resumes exactly."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io as sio

import main
from conftest import ROOT, run_main, snapshot
from rs.results import parse_log, read_tsv
from rs.stats import GRID, acr, certified_accuracy, certified_radii

ARGS = ['--task', 'test', '--dataset', 'digits', '--start_img', 0, '--num_img', 24, '--skip', 7, '--N0', 50,
        '--N', 400, '--certify_batch', 150, '--seed', 3, '--sigma', 1.0]


def certify(ckpt, matdir, *extra):
    return main.main([str(a) for a in ARGS + ['--resume_ckpt', ckpt, '--matdir', matdir, *extra]])


def parse_printed_summary(text):
    """{mode: (numbers per radius, ACR)} from the MACER-style summary printed on stdout."""
    out, mode = {}, 'hard'
    for line in text.splitlines():
        m = re.match(r'===(Hard|Soft) certify===', line)
        if m:
            mode = m.group(1).lower()
        m = re.match(r'Radius: ([\d.]+)  Number: (\d+)  Acc: ([\d.]+)', line)
        if m:
            out.setdefault(mode, [[], None])[0].append((float(m.group(1)), int(m.group(2)), float(m.group(3))))
        m = re.match(r'ACR: ([\d.e-]+)', line)
        if m:
            out[mode][1] = float(m.group(1))
    return out


def test_mat_logs_json_and_printed_summary_agree(digits_lenet, tmp_path, capsys):
    assert certify(digits_lenet, tmp_path) == 0
    printed = parse_printed_summary(capsys.readouterr().out)
    mat = sio.loadmat(tmp_path / '8.mat')  # named by the checkpoint's epoch, as the original
    summary = json.loads((tmp_path / '8.json').read_text())
    assert summary['status'] == 'complete' and summary['args']['resume_ckpt'] == digits_lenet
    indices = list(range(0, 24 * 7, 7))
    for mode in ('hard', 'soft'):
        radii = mat[mode]
        assert radii.shape == (1, 24) and radii.dtype == np.float64
        log = read_tsv(tmp_path / f'8.{mode}.tsv')
        assert log['idx'].tolist() == indices
        # correct means the prediction equals the label; an abstention (-1) is never correct
        assert (log['correct'] == (log['predict'] == log['label'])).all()
        assert np.array_equal(radii[0], certified_radii(log['radius'], log['correct']))
        numbers, printed_acr = printed[mode]
        acc = certified_accuracy(radii[0], GRID)
        assert [n for _, n, _ in numbers] == [round(a * 24) for a in acc]
        assert [r for r, _, _ in numbers] == list(GRID)
        assert printed_acr == pytest.approx(acr(radii[0]), rel=1e-12)
        assert summary['summary'][mode]['accuracy'] == pytest.approx(list(acc))
        assert summary['summary'][mode]['acr'] == pytest.approx(acr(radii[0]))
    hard = read_tsv(tmp_path / '8.hard.tsv')
    # the model is neither hopeless nor perfect here: the check above saw correct, wrong and abstained images
    assert 0 < hard['correct'].sum() < 24 and (hard['predict'] == -1).any()


def _rows_without_time(path):
    return [(r.idx, r.label, r.predict, r.radius, r.correct) for r in parse_log(open(path).read(), path)]


def _same_results(a, b):
    for mode in ('hard', 'soft'):
        assert _rows_without_time(a / f'8.{mode}.tsv') == _rows_without_time(b / f'8.{mode}.tsv')
        assert np.array_equal(sio.loadmat(a / '8.mat')[mode], sio.loadmat(b / '8.mat')[mode])
    ja, jb = (json.loads((p / '8.json').read_text()) for p in (a, b))
    assert ja['identity'] == jb['identity'] and ja['summary'] == jb['summary'] and jb['status'] == 'complete'


def test_a_cut_run_resumes_to_the_same_files(digits_lenet, tmp_path):
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    assert certify(digits_lenet, full) == 0
    shutil.copytree(full, cut)
    # as if killed: the soft log one row behind the hard one, the hard log ending in half a row, no .mat
    for mode, keep in (('hard', 10), ('soft', 9)):
        path = cut / f'8.{mode}.tsv'
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(''.join(lines[:1 + keep]) + (lines[1 + keep][:7] if mode == 'hard' else ''))
    (cut / '8.mat').unlink()
    # a finished run's logs are the ones its JSON records the digest of: cut afterwards, they are refused
    assert certify(digits_lenet, cut) == 2
    # a killed run never got that far: its JSON still says "running"
    record = json.loads((cut / '8.json').read_text())
    (cut / '8.json').write_text(json.dumps({k: v for k, v in record.items() if k != 'sha256'} | {'status': 'running'}))
    assert certify(digits_lenet, cut) == 0
    _same_results(full, cut)


def test_a_killed_run_resumes_to_the_same_files(digits_lenet, tmp_path):
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    slow = ['--N', 4000, '--certify_batch', 500]  # a few tenths of a second per image
    args = [str(a) for a in ARGS + ['--resume_ckpt', digits_lenet] + slow]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *args, '--matdir', str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    log = killed / '8.hard.tsv'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count('\n') >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = log.read_text().count('\n') - 1
    assert 3 <= rows < 24, 'the run was not killed midway'
    assert not (killed / '8.mat').exists()
    assert run_main(*args, '--matdir', killed).returncode == 0
    assert run_main(*args, '--matdir', full).returncode == 0
    _same_results(full, killed)


def test_a_run_of_the_version_before_1_0_resumes(digits_lenet, tmp_path):
    """Results written before version 1.0.0 (no version, no statistics, an identity without input_layer and
    early_abstain) are resumed, not refused."""
    full, old = tmp_path / 'full', tmp_path / 'old'
    assert certify(digits_lenet, full) == 0
    shutil.copytree(full, old)
    record = json.loads((old / '8.json').read_text())
    if os.path.exists('/proc/cpuinfo'):  # which CPU made it: bit-exact results hold on one CPU model only
        assert record['environment']['cpu']
    for key in ('input_layer', 'early_abstain'):
        del record['identity'][key]
    record = {k: v for k, v in record.items() if k not in ('version', 'summary', 'samples', 'checkpoint')}
    record['args']['normalization'] = None
    (old / '8.json').write_text(json.dumps({**record, 'status': 'running'}))
    (old / '8.stats.jsonl').unlink()
    (old / '8.mat').unlink()
    for mode in ('hard', 'soft'):  # as if stopped after 10 images
        path = old / f'8.{mode}.tsv'
        path.write_text(''.join(path.read_text().splitlines(keepends=True)[:11]))
    assert certify(digits_lenet, old) == 0
    for mode in ('hard', 'soft'):
        assert _rows_without_time(full / f'8.{mode}.tsv') == _rows_without_time(old / f'8.{mode}.tsv')
    assert json.loads((old / '8.json').read_text())['status'] == 'complete'


def test_other_arguments_are_refused_and_nothing_is_touched(digits_lenet, tmp_path):
    assert certify(digits_lenet, tmp_path) == 0
    before = snapshot(tmp_path)
    r = run_main(*ARGS, '--resume_ckpt', digits_lenet, '--matdir', tmp_path, '--sigma', 0.25)
    assert r.returncode == 2 and r.stderr.count('\n') == 1
    assert 'other arguments (sigma 1.0 there, 0.25 now)' in r.stderr
    assert snapshot(tmp_path) == before


def test_bad_test_image_ranges(digits_lenet, tmp_path):
    r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', digits_lenet, '--start_img', 1000)
    assert r.returncode == 2 and 'past the end of the digits test set (1000 images)' in r.stderr
    r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', digits_lenet, '--start_img', 900,
                 '--num_img', 60, '--skip', 2)
    assert r.returncode == 2 and 'use --num_img 50 or less' in r.stderr and r.stderr.count('\n') == 1


# --- sufficient statistics and early abstention (docs/METHOD.md, "Sufficient statistics", "Early abstention")

def _rows(path):
    return [r.result() for r in parse_log(open(path).read(), str(path))]


def test_recomputation_from_the_statistics_equals_the_run_and_a_fresh_run_at_another_alpha(digits_lenet, tmp_path):
    from rs.recompute import recompute
    assert certify(digits_lenet, tmp_path / 'a001') == 0
    assert certify(digits_lenet, tmp_path / 'a05', '--alpha', '0.05') == 0
    for mode in ('hard', 'soft'):
        own = recompute(str(tmp_path / 'a001' / '8.json'), mode=mode)
        assert np.array_equal(own['radii'], sio.loadmat(tmp_path / 'a001' / '8.mat')[mode][0])
        assert [r.result() for r in own['rows']] == _rows(tmp_path / 'a001' / f'8.{mode}.tsv')
        other = recompute(str(tmp_path / 'a001' / '8.json'), alpha=0.05, mode=mode)
        assert np.array_equal(other['radii'], sio.loadmat(tmp_path / 'a05' / '8.mat')[mode][0])
        assert [r.result() for r in other['rows']] == _rows(tmp_path / 'a05' / f'8.{mode}.tsv')
        assert other['recomputed']['alpha'] == 0.05 and other['recomputed']['run_alpha'] == 0.001
    # the looser alpha certifies more: the comparison is not vacuous
    assert acr(sio.loadmat(tmp_path / 'a05' / '8.mat')['hard'][0]) > acr(sio.loadmat(tmp_path / 'a001' / '8.mat')['hard'][0])


def test_hard_statistics_read_with_the_bernstein_bound(digits_lenet, tmp_path):
    import json as json_
    from rs.recompute import recompute
    from rs.stats import bernstein_lower_bound, radius
    assert certify(digits_lenet, tmp_path, '--mode', 'hard') == 0
    result = recompute(str(tmp_path / '8.json'), bound='bernstein')
    entries = [json_.loads(line) for line in (tmp_path / '8.stats.jsonl').read_text().splitlines()]
    for row, entry in zip(result['rows'], entries):
        h = entry['hard']
        lower = bernstein_lower_bound(h['nA'], h['nA'], h['n'], 0.001)
        assert (row.predict, row.radius) == ((h['cAHat'], radius(1.0, lower)) if lower >= 0.5 else (-1, 0.0))
    # Bernstein is the looser bound for 0/1 outcomes: no radius grows
    assert (result['radii'] <= sio.loadmat(tmp_path / '8.mat')['hard'][0] + 1e-12).all()
    with pytest.raises(Exception, match='soft certificates|not soft'):
        recompute(str(tmp_path / '8.json'), mode='soft')


def test_edited_statistics_are_refused_not_recomputed(digits_lenet, tmp_path):
    """A statistics line raised by hand (nA = n: the largest radius N allows) would give a larger certificate
    at any alpha: the run's own rows must still follow from its statistics, else nothing is recomputed."""
    from plumbing.errors import UsageError
    from rs.recompute import recompute
    assert certify(digits_lenet, tmp_path, '--mode', 'hard') == 0
    stats = tmp_path / '8.stats.jsonl'
    lines = stats.read_text().splitlines(keepends=True)
    entry = json.loads(lines[0])
    assert entry['hard']['nA'] < entry['hard']['n']  # the edit below changes the certificate
    entry['hard']['nA'] = entry['hard']['n']
    stats.write_text(json.dumps(entry) + '\n' + ''.join(lines[1:]))
    with pytest.raises(UsageError, match='is not what its statistics'):
        recompute(str(tmp_path / '8.json'), alpha=0.01)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'visualize', 'recompute.py'), str(tmp_path / '8.json'),
                        '--alpha', '0.01', '--out', str(tmp_path / 'r')], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and not list(tmp_path.glob('r.*'))


def test_the_recompute_command_writes_a_result_that_says_how_it_was_made(digits_lenet, tmp_path):
    assert certify(digits_lenet, tmp_path) == 0
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'visualize', 'recompute.py'), str(tmp_path / '8.json'),
                        '--alpha', '0.05', '--mode', 'soft', '--out', str(tmp_path / 'r')], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert 'alpha 0.05 (the run: 0.001), bound bernstein (the run: bernstein); no sampling' in r.stdout
    made = json.loads((tmp_path / 'r.json').read_text())
    assert made['recomputed']['from'] == str(tmp_path / '8.json') and made['recomputed']['mode'] == 'soft'
    assert sio.loadmat(tmp_path / 'r.mat')['soft'].shape == (1, 24)
    assert len(read_tsv(tmp_path / 'r.tsv')['radius']) == 24
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'visualize', 'recompute.py'), str(tmp_path / '8.json'),
                        '--mode', 'soft', '--bound', 'clopper-pearson', '--out', str(tmp_path / 'x')],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not 0/1 outcomes' in r.stderr


def test_early_abstention_changes_no_returned_certificate_and_saves_samples(tmp_path, capsys):
    # a sigma 0.25 model certified at sigma 2: many images whose top class is well below 1/2
    shipped = os.path.join(ROOT, 'checkpoints', 'digits-gaussian-0.25.pth')
    weak = ['--sigma', '2.0', '--N', '2000', '--num_img', '40', '--skip', '3', '--name', 'w', '--mode', 'hard']
    assert certify(shipped, tmp_path / 'standard', *weak) == 0
    capsys.readouterr()
    assert certify(shipped, tmp_path / 'early', *weak, '--early_abstain', '100') == 0
    printed = capsys.readouterr().out
    standard, early = _rows(tmp_path / 'standard' / 'w.hard.tsv'), _rows(tmp_path / 'early' / 'w.hard.tsv')
    differ = [(s, e) for s, e in zip(standard, early) if s != e]
    # an image differs only by an early abstention: never a new or a changed certificate
    assert all(e[2] == -1 and e[3] == 0.0 for _, e in differ)
    assert len(differ) <= 1
    record = json.loads((tmp_path / 'early' / 'w.json').read_text())
    per_image = record['samples']['per_image']
    early_ones = [d for d in per_image if d == 50 + 100]
    assert len(per_image) == 40 and len(early_ones) >= 5  # N0 = 50 and M = 100 drawn, the 2000 saved
    assert record['samples']['total'] == sum(per_image) < 40 * 2050
    assert record['samples']['saved'] == pytest.approx(1 - sum(per_image) / (40 * 2050))
    assert f'{len(early_ones)} of 40 images abstained early' in printed and '% saved' in printed
    assert record['identity']['early_abstain'] == 100
    # the statistics say which images stopped early, and a recomputation keeps them abstained
    from rs.recompute import recompute
    result = recompute(str(tmp_path / 'early' / 'w.json'), alpha=0.2)
    assert result['recomputed']['early_abstentions_kept'] == len(early_ones)
    assert all(row.predict == -1 for row, d in zip(result['rows'], per_image) if d == 150)
