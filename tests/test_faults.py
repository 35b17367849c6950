"""Faults: SIGKILL at random moments (during checkpoint writes too), failing writes and a full disk, a diverging
loss, concurrent runs on one folder, runs resumed into the wrong folder."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_main, snapshot
from plumbing.errors import DiskFull
from plumbing.files import atomic_write
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
from plumbing.files import atomic_write
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


# --- one run per folder, one process per folder -----------------------------------------------------

FAST = ['--task', 'train', '--dataset', 'digits', '--quiet', '--batch_size', '64']


def test_resuming_into_another_runs_folder_is_refused_whatever_the_epochs(tmp_path):
    a, b = tmp_path / 'A', tmp_path / 'B'
    assert run_main(*FAST, '--method', 'gaussian', '--epochs', '1', '--ckptdir', a).returncode == 0
    assert run_main(*FAST, '--gauss_num', '2', '--epochs', '2', '--ckptdir', b).returncode == 0
    before = snapshot(a)
    r = run_main(*FAST, '--gauss_num', '2', '--epochs', '3', '--resume_ckpt', b / 'latest.pth', '--ckptdir', a)
    assert r.returncode == 2 and r.stderr.count('\n') == 1
    assert 'holds another run (latest.pth, epoch 1)' in r.stderr and 'would overwrite it' in r.stderr
    # the MACER code's format starts a new run: never into a folder that holds one, even at a lower epoch
    torch.save({'net': torch.load(b / 'latest.pth', weights_only=True)['net'], 'epoch': 2}, tmp_path / 'orig.pth')
    r = run_main(*FAST, '--method', 'gaussian', '--epochs', '3', '--resume_ckpt', tmp_path / 'orig.pth', '--ckptdir', a)
    assert r.returncode == 2 and 'starts a new run, which would overwrite it' in r.stderr
    assert snapshot(a) == before
    # the run itself continues in its own folder, and in a fresh one (a copy of the run)
    assert run_main(*FAST, '--gauss_num', '2', '--epochs', '3', '--resume_ckpt', b / 'latest.pth',
                    '--ckptdir', tmp_path / 'C').returncode == 0
    assert run_main(*FAST, '--gauss_num', '2', '--epochs', '3', '--resume_ckpt', b / 'latest.pth',
                    '--ckptdir', b).returncode == 0
    ids = {torch.load(p / 'latest.pth', weights_only=True)['run_id'] for p in (b, tmp_path / 'C')}
    assert len(ids) == 1 and torch.load(a / 'latest.pth', weights_only=True)['run_id'] not in ids


def wait_for(condition, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not condition():
        time.sleep(0.01)
    return condition()


def test_two_training_runs_into_one_folder_the_second_is_refused_naming_the_first(tmp_path):
    folder = tmp_path / 'ck'
    first = start(FAST + ['--gauss_num', '4', '--epochs', '3', '--ckptdir', folder])
    try:
        assert wait_for(lambda: (folder / '.lock').exists() and (folder / '.lock').read_text().strip(), first)
        second = run_main(*FAST, '--gauss_num', '4', '--epochs', '3', '--ckptdir', folder, timeout=120)
        assert second.returncode == 2 and second.stderr.count('\n') == 1
        assert f'--ckptdir {folder} is in use by process {first.pid} on host' in second.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0 and weights(folder / 'latest.pth')
    assert torch.load(folder / 'latest.pth', weights_only=True)['epoch'] == 3
    assert not (folder / '.lock').exists()  # released at the end


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / 'ck'
    proc = start(FAST + ['--gauss_num', '4', '--epochs', '3', '--ckptdir', folder])
    assert wait_for(lambda: (folder / '.lock').exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / '.lock').exists()  # the file stays; its lock went with the process
    assert run_main(*FAST, '--gauss_num', '4', '--epochs', '1', '--ckptdir', folder, '--resume_ckpt', 'auto',
                    ).returncode == 0


def test_two_identical_certifications_into_one_folder(tmp_path, digits_lenet):
    args = CERT + ['--resume_ckpt', digits_lenet, '--matdir', tmp_path / 'mat', '--N', '6000']
    first = start(args)
    try:
        assert wait_for(lambda: lines(tmp_path / 'mat' / '8.hard.tsv') >= 2, first)
        second = run_main(*args, timeout=120)
        assert second.returncode == 2 and second.stderr.count('\n') == 1
        assert f'the results named 8 in --matdir {tmp_path / "mat"}) is in use by process {first.pid}' in second.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    rows = parse_log((tmp_path / 'mat' / '8.hard.tsv').read_text(), 'log')
    assert [r.idx for r in rows] == list(range(0, 60, 3))
    # a folder holding exact duplicate rows (a double submission before locks existed) is repaired on resume
    for mode in ('hard', 'soft'):
        path = tmp_path / 'mat' / f'8.{mode}.tsv'
        text = path.read_text().splitlines(keepends=True)
        path.write_text(''.join(text[:8] + [line.replace('\t0:00:', '\t0:01:') for line in text[1:8]]))
    (tmp_path / 'mat' / '8.mat').unlink()
    (tmp_path / 'mat' / '8.json').write_text((tmp_path / 'mat' / '8.json').read_text().replace('"complete"',
                                                                                               '"running"'))
    again = run_main(*args)
    assert again.returncode == 0, again.stderr
    assert [r.result() for r in parse_log((tmp_path / 'mat' / '8.hard.tsv').read_text(), 'log')] == \
        [r.result() for r in rows]
    # the same image with another result is two runs mixed: refused, with the line
    path = tmp_path / 'mat' / '8.hard.tsv'
    text = path.read_text().splitlines(keepends=True)
    fields = text[3].split('\t')
    fields[3] = repr(float(fields[3]) / 2) if float(fields[3]) > 0 else '0.01'
    fields[2] = fields[1]
    fields[4] = '1'
    path.write_text(''.join(text + ['\t'.join(fields)]))
    r = run_main(*args)
    assert r.returncode == 2 and 'line 22: image 6 is logged twice with different results' in r.stderr


def test_a_certification_refuses_nan_outputs_and_keeps_what_it_certified(tmp_path):
    from model import LeNet
    torch.manual_seed(0)
    net = LeNet()
    with torch.no_grad():
        net.fc2.weight.fill_(3e38)  # finite weights whose outputs overflow to infinity
    torch.save({'net': net.state_dict(), 'epoch': 1}, tmp_path / 'overflow.pth')
    r = run_main('--task', 'test', '--dataset', 'digits', '--start_img', '0', '--num_img', '3', '--N', '100',
                 '--quiet', '--resume_ckpt', tmp_path / 'overflow.pth', '--matdir', tmp_path / 'mat')
    assert r.returncode == 2 and r.stderr.count('\n') == 1
    assert "outputs on test image 0 are NaN or infinite: no certificate can be issued" in r.stderr
    assert parse_log((tmp_path / 'mat' / '1.hard.tsv').read_text(), 'log') == []
    assert not (tmp_path / 'mat' / '1.mat').exists()


def test_a_huge_epoch_and_a_fifo_are_answered_at_once(tmp_path):
    from model import LeNet
    torch.save({'net': LeNet().state_dict(), 'epoch': 10 ** 9}, tmp_path / 'big.pth')
    t0 = time.time()
    # the schedule is set in closed form: no 10^9 scheduler steps before the first epoch
    r = run_main(*FAST, '--gauss_num', '2', '--epochs', 10 ** 9 + 1, '--lr_milestones', 10, '--resume_ckpt',
                 tmp_path / 'big.pth', '--ckptdir', tmp_path / 'ck', timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.time() - t0 < 100
    history = torch.load(tmp_path / 'ck' / 'latest.pth', weights_only=True)['history']
    assert history[0]['epoch'] == 10 ** 9 + 1 and history[0]['lr'] == pytest.approx(0.001)
    os.mkfifo(tmp_path / 'fifo.pth')
    r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', tmp_path / 'fifo.pth', timeout=60)
    assert r.returncode == 2 and 'is a FIFO, not a file' in r.stderr


def test_only_this_tools_temporaries_are_removed(tmp_path, digits_lenet):
    ck, mat = tmp_path / 'ck', tmp_path / 'mat'
    ck.mkdir()
    mat.mkdir()
    for folder in (ck, mat):
        (folder / '.notes.tmp').write_text('mine\n')
        (folder / '.latest.pth.abcdefgh.tmp').write_text('an older version\'s, or a user\'s\n')
    (ck / '.latest.pth.macer-tmp-abcd1234.tmp').write_bytes(b'left by a killed run')
    (mat / '.8.mat.macer-tmp-abcd1234.tmp').write_bytes(b'left by a killed run')
    (mat / '.9.mat.macer-tmp-abcd1234.tmp').write_bytes(b'another run\'s')
    (mat / '.8.b.mat.macer-tmp-abcd1234.tmp').write_bytes(b'the run named 8.b, writing beside 8')
    assert run_main(*FAST, '--gauss_num', '2', '--epochs', '1', '--ckptdir', ck).returncode == 0
    assert run_main(*CERT, '--num_img', '2', '--N', '100', '--resume_ckpt', digits_lenet, '--matdir', mat
                    ).returncode == 0
    assert sorted(f for f in os.listdir(ck) if f.startswith('.')) == ['.latest.pth.abcdefgh.tmp', '.notes.tmp']
    assert sorted(f for f in os.listdir(mat) if f.startswith('.')) == [
        '.8.b.mat.macer-tmp-abcd1234.tmp', '.9.mat.macer-tmp-abcd1234.tmp', '.latest.pth.abcdefgh.tmp', '.notes.tmp']


def test_resumed_training_keeps_a_finished_certification_and_finishes_an_unfinished_one(tmp_path):
    args = FAST + ['--gauss_num', '2', '--cert_from', '2', '--cert_every', '2', '--start_img', '0', '--num_img', '4',
                   '--N', '200', '--ckptdir', tmp_path / 'ck', '--matdir', tmp_path / 'mat']
    assert run_main(*args, '--epochs', '2').returncode == 0
    finished = snapshot(tmp_path / 'mat')
    # another --N for the certifications to come: the finished one of epoch 2 stands
    r = run_main(*args[:-8], '--start_img', '0', '--num_img', '4', '--N', '300', '--ckptdir', tmp_path / 'ck',
                 '--matdir', tmp_path / 'mat', '--epochs', '4', '--resume_ckpt', tmp_path / 'ck' / 'latest.pth')
    assert r.returncode == 0, r.stderr
    assert 'certified before the stop, kept as it is' in r.stdout
    assert {k: v for k, v in snapshot(tmp_path / 'mat').items() if k.startswith('2.')} == finished
    assert json.loads((tmp_path / 'mat' / '4.json').read_text())['identity']['N'] == 300
    # an unfinished one is finished with its own arguments (issue 26, item 22: docs/RUNS.md says so)
    record = json.loads((tmp_path / 'mat' / '4.json').read_text())
    (tmp_path / 'mat' / '4.json').write_text(json.dumps({**record, 'status': 'running'}))
    r = run_main(*args, '--epochs', '4', '--resume_ckpt', tmp_path / 'ck' / '4.pth')
    assert r.returncode == 0, r.stderr
    assert 'with the arguments it was begun with (--N 300 (given now: 200))' in r.stdout
    record = json.loads((tmp_path / 'mat' / '4.json').read_text())
    assert record['status'] == 'complete' and record['identity']['N'] == 300 and record['args']['N'] == 300


def test_a_fresh_run_that_diverges_says_there_is_no_checkpoint(tmp_path):
    r = run_main(*FAST, '--lr', '1e30', '--epochs', '1', '--ckptdir', tmp_path / 'ck')
    assert r.returncode == 2 and r.stderr.count('\n') == 1
    assert 'no checkpoint was written before it: lower --lr (now 1e+30) or --lbd (now 12.0) and start again' in r.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs at tmp_path/disk, where the test can fill the disk for real (needs mount rights)."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip('cannot mount a tmpfs here (not root); test_a_failed_write... covers the same path simulated')
    yield disk
    subprocess.run(['umount', str(disk)])


def test_a_full_disk_is_one_line_and_keeps_what_was_written(small_disk, digits_lenet):
    # a ResNet-110 checkpoint (7 MB) cannot fit: the training run stops at its first save
    r = run_main(*FAST, '--dataset', 'digits', '--gauss_num', '1', '--epochs', '1', '--ckptdir', small_disk / 'ck',
                 '--arch', 'lenet', '--save_every', '1')
    # LeNet's checkpoint (5 MB with its optimiser state) does not fit into 2 MB either
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert 'latest.pth: the disk is full' in r.stderr and 'was not written' in r.stderr
    assert not [f for f in os.listdir(small_disk / 'ck') if 'tmp' in f]
    # certification: the disk is full but for 16 KiB, which the first files take; the logs are kept
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(small_disk / 'filler', 'wb') as f:
        f.write(b'\0' * (free - 16 * 1024))
    r = run_main(*CERT, '--num_img', '40', '--skip', '1', '--N', '100', '--resume_ckpt', digits_lenet,
                 '--matdir', small_disk / 'mat')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert 'the disk is full' in r.stderr
    os.unlink(small_disk / 'filler')
    done = len(parse_log((small_disk / 'mat' / '8.hard.tsv').read_text(), 'log'))
    assert run_main(*CERT, '--num_img', '40', '--skip', '1', '--N', '100', '--resume_ckpt', digits_lenet,
                    '--matdir', small_disk / 'mat').returncode == 0
    assert len(parse_log((small_disk / 'mat' / '8.hard.tsv').read_text(), 'log')) == 40 >= done


def test_a_matdir_holding_another_runs_results_is_refused_before_the_first_epoch(tmp_path):
    args = FAST + ['--gauss_num', '2', '--cert_from', '2', '--start_img', '0', '--num_img', '2', '--N', '100',
                   '--matdir', tmp_path / 'mat']
    assert run_main(*args, '--epochs', '2', '--ckptdir', tmp_path / 'a').returncode == 0
    t0 = time.time()
    r = run_main(*args, '--epochs', '2', '--ckptdir', tmp_path / 'b')
    assert r.returncode == 2 and r.stderr.count('\n') == 1
    assert 'holds 2.json, the results of another training run' in r.stderr and 'epoch 1/2' not in r.stdout
    assert not (tmp_path / 'b' / 'latest.pth').exists()
    # its own run resumes there as before
    assert run_main(*args, '--epochs', '3', '--ckptdir', tmp_path / 'a', '--resume_ckpt', 'auto').returncode == 0
