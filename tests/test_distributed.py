"""torch.distributed: two CPU processes under Gloo, launched by torchrun, as on a multi-GPU machine."""
import json
import os
import subprocess
import sys
import time

import scipy.io as sio
import torch

from conftest import ROOT, run_main
from rs.results import parse_log

# one thread per process in both the single-process and the two-process runs: the same arithmetic
ENV = dict(os.environ, OMP_NUM_THREADS='1')


def torchrun(*args, procs=2, timeout=600, script=None):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
                           str(procs), script or os.path.join(ROOT, 'main.py'), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=ENV, timeout=timeout)


def rows(path):
    return [(r.idx, r.label, r.predict, r.radius, r.correct) for r in parse_log(open(path).read(), str(path))]


CERT = ['--task', 'test', '--dataset', 'digits', '--start_img', '3', '--num_img', '15', '--skip', '7', '--N', '600',
        '--certify_batch', '200', '--seed', '5', '--quiet']


def test_sharded_certification_equals_a_single_process(tmp_path, digits_lenet):
    single = run_main(*CERT, '--resume_ckpt', digits_lenet, '--matdir', tmp_path / 'one', env=ENV)
    assert single.returncode == 0, single.stderr
    shared = torchrun(*CERT, '--resume_ckpt', digits_lenet, '--matdir', tmp_path / 'two')
    assert shared.returncode == 0, shared.stderr
    for mode in ('hard', 'soft'):
        assert rows(tmp_path / 'two' / f'8.{mode}.tsv') == rows(tmp_path / 'one' / f'8.{mode}.tsv')
        assert (sio.loadmat(tmp_path / 'two' / '8.mat')[mode] == sio.loadmat(tmp_path / 'one' / '8.mat')[mode]).all()
    assert sorted(os.listdir(tmp_path / 'two')) == sorted(os.listdir(tmp_path / 'one'))  # the parts were merged
    one, two = (json.loads((tmp_path / d / '8.json').read_text()) for d in ('one', 'two'))
    assert one['summary'] == two['summary'] and one['identity'] == two['identity']
    # the summary is printed once, by rank 0
    assert shared.stdout.count('===Certify Summary===') == 1



def test_sequential_shard_under_torchrun_equals_a_single_process(tmp_path, digits_lenet):
    """A slice of a job array (--shard) certified sequentially (--radii) by two processes: the rows, statistics
    and .mat of one process certifying that slice."""
    flags = [*CERT, '--mode', 'hard', '--radii', '0.25', '0.5', '--shard', '2/3', '--resume_ckpt', digits_lenet]
    single = run_main(*flags, '--matdir', tmp_path / 'one', env=ENV)
    assert single.returncode == 0, single.stderr
    shared = torchrun(*flags, '--matdir', tmp_path / 'two')
    assert shared.returncode == 0, shared.stderr
    assert rows(tmp_path / 'two' / '8.hard.tsv') == rows(tmp_path / 'one' / '8.hard.tsv')
    assert (tmp_path / 'two' / '8.stats.jsonl').read_bytes() == (tmp_path / 'one' / '8.stats.jsonl').read_bytes()
    assert (sio.loadmat(tmp_path / 'two' / '8.mat')['hard'] == sio.loadmat(tmp_path / 'one' / '8.mat')['hard']).all()
    one, two = (json.loads((tmp_path / d / '8.json').read_text()) for d in ('one', 'two'))
    assert one['identity'] == two['identity'] and one['identity']['shard'] == [2, 3]
    assert one['summary'] == two['summary'] and one['summary']['hard']['acr'] is None

TRAIN = ['--task', 'train', '--dataset', 'digits', '--gauss_num', '2', '--batch_size', '64', '--lr', '0.05',
         '--quiet', '--cert_from', '3', '--cert_every', '10', '--start_img', '0', '--num_img', '6', '--N', '200']


def test_distributed_training_resumes_exactly_and_writes_from_rank_0(tmp_path):
    straight = torchrun(*TRAIN, '--epochs', '3', '--ckptdir', tmp_path / 'a', '--matdir', tmp_path / 'a-mat')
    assert straight.returncode == 0, straight.stderr
    first = torchrun(*TRAIN, '--epochs', '1', '--ckptdir', tmp_path / 'b', '--matdir', tmp_path / 'b-mat')
    assert first.returncode == 0, first.stderr
    rest = torchrun(*TRAIN, '--epochs', '3', '--ckptdir', tmp_path / 'b', '--matdir', tmp_path / 'b-mat',
                    '--resume_ckpt', tmp_path / 'b' / 'latest.pth')
    assert rest.returncode == 0, rest.stderr
    a = torch.load(tmp_path / 'a' / 'latest.pth', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'latest.pth', weights_only=True)
    assert all(torch.equal(a['net'][k], b['net'][k]) for k in a['net'])
    assert len(a['rng']) == 2  # both ranks' RNG states, to resume exactly
    assert sorted(os.listdir(tmp_path / 'a')) == ['3.pth', 'latest.pth', 'log.jsonl']
    assert len((tmp_path / 'a' / 'log.jsonl').read_text().splitlines()) == 3
    assert straight.stdout.count('epoch 3/3') == 1  # one log line per epoch: rank 0 only
    assert rows(tmp_path / 'a-mat' / '3.hard.tsv') == rows(tmp_path / 'b-mat' / '3.hard.tsv')
    # one process cannot continue a two-process run exactly, and says so
    r = run_main(*TRAIN, '--epochs', '4', '--ckptdir', tmp_path / 'b', '--resume_ckpt', tmp_path / 'b' / 'latest.pth')
    assert r.returncode == 2 and 'job of 2 processes' in r.stderr


def resnet50_macer_file(path):
    """A random ResNet-50 (BatchNorm buffers) in the MACER code's `{'net', 'epoch'}` format."""
    from model import build_model
    torch.manual_seed(0)
    net = build_model('resnet50', 1000)
    torch.save({'net': net.state_dict(), 'epoch': 1}, path)
    return str(path)


def test_sharded_certification_of_a_batchnorm_network_with_more_processes_than_images(tmp_path):
    # a rank with no image to certify must not hang the job: certification never goes through
    # DistributedDataParallel, whose forward broadcasts buffers in a collective
    from conftest import imagenet_folder
    root = imagenet_folder(tmp_path / 'imagenet', classes=1, per_class=1)
    ckpt = resnet50_macer_file(tmp_path / 'r50.pth')
    cert = ['--task', 'test', '--dataset', 'imagenet', '--root', root, '--resume_ckpt', ckpt, '--start_img', '0',
            '--num_img', '1', '--N0', '4', '--N', '12', '--certify_batch', '8', '--alpha', '0.1', '--quiet']
    shared = torchrun(*cert, '--matdir', tmp_path / 'two', procs=2, timeout=300)
    assert shared.returncode == 0, shared.stderr[-3000:]
    single = run_main(*cert, '--matdir', tmp_path / 'one', env=ENV)
    assert single.returncode == 0, single.stderr[-3000:]
    for mode in ('hard', 'soft'):
        assert rows(tmp_path / 'two' / f'1.{mode}.tsv') == rows(tmp_path / 'one' / f'1.{mode}.tsv')
    assert sorted(os.listdir(tmp_path / 'two')) == sorted(os.listdir(tmp_path / 'one'))


RANK0_FAILS = """
import os, sys, time
sys.path.insert(0, os.getcwd())
import rs.certify
from rs.core import NonFiniteOutput
real = rs.certify.Smooth.evidence

def evidence(self, *args, **kwargs):
    if os.environ['RANK'] == '0':
        raise NonFiniteOutput('injected')
    time.sleep(300)  # rank 1 would certify for minutes
    return real(self, *args, **kwargs)

rs.certify.Smooth.evidence = evidence
import main
sys.exit(main.main(sys.argv[1:]))
"""


def test_an_error_on_rank_0_ends_the_other_ranks_promptly(tmp_path, digits_lenet):
    script = tmp_path / 'rank0_fails.py'
    script.write_text(RANK0_FAILS)
    t0 = time.monotonic()
    r = torchrun(*CERT, '--resume_ckpt', digits_lenet, '--matdir', tmp_path / 'mat', script=str(script), timeout=280)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert 'error: the network\'s outputs on test image' in r.stderr
    assert elapsed < 120, elapsed  # not the 300 s rank 1 would take, nor a timeout


def test_a_cuda_device_index_under_torchrun_is_a_usage_error():
    env = dict(ENV, WORLD_SIZE='2', RANK='0', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT='29599')
    r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', 'checkpoints/digits-macer-0.25.pth',
                 '--device', 'cuda:1', env=env, timeout=60)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert 'each process takes the GPU of its local rank' in r.stderr
