"""How a model is run: fp32 means IEEE fp32, tf32 is its own precision, the GPU model in a certification's
identity, the training sigma as certification's default."""
import json
from types import SimpleNamespace

import pytest
import torch

import evaluate
from conftest import run_main
from plumbing import devices
from plumbing.errors import UsageError


def test_fp32_means_ieee_fp32_and_tf32_is_its_own_precision():
    cpu = torch.device('cpu')
    try:
        devices.speed_settings(cpu, 'tf32')
        assert devices.fp32_settings()['cuda.matmul'] == 'tf32' and devices.fp32_settings()['cudnn.conv'] == 'tf32'
        devices.speed_settings(cpu, 'fp32')
        # PyTorch's default for cuDNN convolutions is TF32: fp32 must turn it off, on every backend
        assert set(devices.fp32_settings().values()) == {'ieee'}
        devices.speed_settings(cpu, 'bf16')
        assert set(devices.fp32_settings().values()) == {'ieee'}
    finally:
        devices.speed_settings(cpu, 'fp32')
    with pytest.raises(UsageError, match='tf32 is a mode of NVIDIA GPUs'):
        devices.check_precision('tf32', cpu)
    assert devices.gpu_model(cpu) is None


def _args(**kw):
    base = dict(dataset='digits', start_img=0, num_img=2, skip=1, sigma=0.25, beta=16.0, N0=10, N=20, alpha=0.001,
                early_abstain=0, certify_batch=10, seed=0, precision='fp32', memory_format='channels_last',
                compile=False, deterministic=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_a_certification_identity_holds_the_gpu_model_and_beta_only_where_used(monkeypatch):
    from model import LeNet
    net = LeNet()
    hard = evaluate.certification_identity(_args(), net, 'hard', torch.device('cpu'))
    assert 'beta' not in hard and 'gpu' not in hard and 'deterministic' not in hard
    assert evaluate.certification_identity(_args(), net, 'both', torch.device('cpu'))['beta'] == 16.0
    monkeypatch.setattr(evaluate, 'gpu_model', lambda device: 'NVIDIA H100 80GB HBM3')
    cuda = evaluate.certification_identity(_args(deterministic=True), net, 'soft', torch.device('cuda', 0))
    assert cuda['gpu'] == 'NVIDIA H100 80GB HBM3' and cuda['deterministic'] is True and cuda['device'] == 'cuda'


def test_certification_takes_the_sigma_the_checkpoint_was_trained_at(tmp_path):
    ckpt = torch.load('checkpoints/digits-gaussian-0.25.pth', weights_only=True)
    ckpt['args']['sigma'] = 0.5
    path = tmp_path / 'half.pth'
    torch.save(ckpt, path)
    common = ['--task', 'test', '--dataset', 'digits', '--resume_ckpt', path, '--start_img', '3', '--num_img', '2',
              '--N', '100', '--mode', 'hard', '--quiet']
    r = run_main(*common, '--matdir', tmp_path / 'a', timeout=300)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / 'a' / f'{ckpt["epoch"]}.json').read_text())
    assert record['identity']['sigma'] == 0.5 and record['checkpoint']['sigma'] == 0.5
    r = run_main(*common, '--sigma', '0.25', '--matdir', tmp_path / 'b', timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'certifying at sigma 0.25, but' in r.stdout and 'trained at sigma 0.5' in r.stdout
    record = json.loads((tmp_path / 'b' / f'{ckpt["epoch"]}.json').read_text())
    assert record['identity']['sigma'] == 0.25 and record['checkpoint']['sigma'] == 0.5
