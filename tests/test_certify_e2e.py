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
