"""Faults: SIGKILL at random moments (during checkpoint writes too), a failing write, a diverging loss."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import DiskFull, atomic_write
from conftest import ROOT, run_main, snapshot
from rs.results import parse_log

MAIN = os.path.join(ROOT, 'main.py')
TRAIN = ['--task', 'train', '--dataset', 'digits', '--epochs', '6', '--gauss_num', '4', '--lr', '0.05',
         '--lr_milestones', '3', '--quiet']


def start(args):
    return subprocess.Popen([sys.executable, MAIN, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def temp_files(folder):
    return [f for f in os.listdir(folder) if f.endswith('.tmp')] if os.path.isdir(folder) else []


def lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def kill_when(proc, condition, delay):
    """SIGKILL `proc` `delay` seconds after `condition()` holds; False when it ended by itself first."""
    while proc.poll() is None and not condition():
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def weights(path):
    return torch.load(path, weights_only=True)['net']


def test_training_killed_again_and_again_ends_with_the_uninterrupted_weights(tmp_path):
    assert run_main(*TRAIN, '--ckptdir', tmp_path / 'straight').returncode == 0
    folder = tmp_path / 'killed'
    args = TRAIN + ['--ckptdir', folder, '--resume_ckpt', 'auto']
    rng = random.Random(0)
    kills = during_write = 0
    # first, kills timed to land inside checkpoint writes: the temporary file is there, the rename is not done
    for _ in range(20):
        if during_write >= 2:
            break
        proc = start(args)
        while proc.poll() is None:
            if temp_files(folder):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                during_write += bool(temp_files(folder))
                break
            time.sleep(0.0005)
        if os.path.exists(folder / 'latest.pth'):
            weights(folder / 'latest.pth')  # whatever was killed, the checkpoint there is whole
    assert during_write >= 1, 'no kill landed inside a checkpoint write'
    # then kills at random moments: a random time after the log reaches a random epoch (progress, not wall
    # time, so that the test kills mid-run on a fast machine as on a slow one); then a run to the end
    for _ in range(4):
        proc = start(args)
        target = min(lines(folder / 'log.jsonl') + rng.randint(0, 1), 5)
        kills += kill_when(proc, lambda: lines(folder / 'log.jsonl') >= target, rng.uniform(0.0, 0.4))
    proc = start(args)
    proc.wait()
    assert proc.returncode == 0 and kills >= 3
    a, b = weights(tmp_path / 'straight' / 'latest.pth'), weights(folder / 'latest.pth')
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not temp_files(folder)  # the stale temporary files were cleared on resume
    log = (folder / 'log.jsonl').read_text().splitlines()
    assert len(log) == 6


CERT = ['--task', 'test', '--dataset', 'digits', '--start_img', '0', '--num_img', '20', '--skip', '3',
        '--N', '3000', '--certify_batch', '500', '--quiet']


def test_certification_killed_again_and_again_gives_the_uninterrupted_results(tmp_path, digits_lenet):
    assert run_main(*CERT, '--resume_ckpt', digits_lenet, '--matdir', tmp_path / 'straight').returncode == 0
    folder = tmp_path / 'killed'
    rng = random.Random(1)
    kills = 0
    log = folder / '8.hard.tsv'
    for _ in range(4):
        proc = start(CERT + ['--resume_ckpt', digits_lenet, '--matdir', folder])
        target = min(lines(log) + rng.randint(1, 6), 21)  # a header and 20 images
        kills += kill_when(proc, lambda: lines(log) >= target, rng.uniform(0.0, 0.2))
    proc = start(CERT + ['--resume_ckpt', digits_lenet, '--matdir', folder])
    proc.wait()
    assert proc.returncode == 0 and kills >= 2
    for mode in ('hard', 'soft'):
        def rows(p):
            return [(r.idx, r.label, r.predict, r.radius, r.correct)
                    for r in parse_log(open(p).read(), str(p))]
        straight, killed = rows(tmp_path / 'straight' / f'8.{mode}.tsv'), rows(folder / f'8.{mode}.tsv')
        assert killed == straight
        assert [r[0] for r in killed] == list(range(0, 60, 3))  # each image once, none lost
    assert (tmp_path / 'straight' / '8.mat').read_bytes()[128:] == (folder / '8.mat').read_bytes()[128:]


WRITER = '''
import sys, time
sys.path.insert(0, {root!r})
from common import atomic_write
def slow(tmp):
    with open(tmp, 'w') as f:
        f.write('new, half written')
        f.flush()
        print('writing', flush=True)
        time.sleep(60)
atomic_write({path!r}, slow)
'''


def test_a_killed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / 'result.json'
    path.write_text('previous\n')
    proc = subprocess.Popen([sys.executable, '-c', WRITER.format(root=ROOT, path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'writing'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_text() == 'previous\n'


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / 'latest.pth'
    path.write_bytes(b'previous')

    def full_disk(tmp):
        with open(tmp, 'wb') as f:
            f.write(b'part')
        raise OSError(28, 'No space left on device')
    with pytest.raises(DiskFull, match='the disk is full .* keeps its previous content'):
        atomic_write(str(path), full_disk)
    assert path.read_bytes() == b'previous' and os.listdir(tmp_path) == ['latest.pth']


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    folder = tmp_path / 'ck'
    args = ['--task', 'train', '--dataset', 'digits', '--gauss_num', '2', '--quiet', '--ckptdir', folder]
    assert run_main(*args, '--epochs', '2').returncode == 0
    # poison the optimiser: NaN momentum buffers make the weights NaN at the next step
    content = torch.load(folder / 'latest.pth', weights_only=True)
    for state in content['optimizer']['state'].values():
        state['momentum_buffer'].fill_(float('nan'))
    torch.save(content, folder / 'latest.pth')
    before = snapshot(folder)
    r = run_main(*args, '--epochs', '4', '--resume_ckpt', folder / 'latest.pth')
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert 'the loss became NaN or infinite in epoch 3' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(folder) == before
