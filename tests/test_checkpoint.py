"""Every checkpoint format loads; everything else is refused with one clear line."""
import os

import pytest
import torch
import torch.nn as nn

from checkpoint import FORMAT, fit_model, read_checkpoint
from conftest import run_main
from model import NORMALIZATION, LeNet, base_network, resnet110
from plumbing.errors import UsageError


def expected_resnet110_keys():
    """The public MACER code's ResNet-110 state_dict, written out from docs/METHOD.md ("Hyper-parameters")."""
    def bn(prefix, c):
        return {f'{prefix}.weight': (c,), f'{prefix}.bias': (c,), f'{prefix}.running_mean': (c,),
                f'{prefix}.running_var': (c,), f'{prefix}.num_batches_tracked': ()}
    keys = {'conv1.weight': (16, 3, 3, 3), **bn('bn1', 16)}
    inplanes = 16
    for layer, planes in ((1, 16), (2, 32), (3, 64)):
        for block in range(18):
            p = f'layer{layer}.{block}'
            keys[f'{p}.conv1.weight'] = (planes, inplanes, 3, 3)
            keys.update(bn(f'{p}.bn1', planes))
            keys[f'{p}.conv2.weight'] = (planes, planes, 3, 3)
            keys.update(bn(f'{p}.bn2', planes))
            if block == 0 and inplanes != planes:
                keys[f'{p}.downsample.0.weight'] = (planes, inplanes, 1, 1)
                keys.update(bn(f'{p}.downsample.1', planes))
            inplanes = planes
    keys['fc.weight'], keys['fc.bias'] = (10, 64), (10,)
    return keys


def test_architectures_have_the_original_keys_and_shapes():
    mine = {k: tuple(v.shape) for k, v in resnet110().state_dict().items()}
    assert mine == expected_resnet110_keys()
    lenet = {k: tuple(v.shape) for k, v in LeNet().state_dict().items()}
    assert lenet == {'conv1.weight': (20, 1, 5, 5), 'conv1.bias': (20,), 'conv2.weight': (50, 20, 5, 5),
                     'conv2.bias': (50,), 'fc1.weight': (500, 800), 'fc1.bias': (500,), 'fc2.weight': (10, 500),
                     'fc2.bias': (10,)}


def _same_weights(a, b):
    sa, sb = base_network(a).state_dict(), base_network(b).state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_original_macer_format(tmp_path):
    net = resnet110()
    torch.save({'net': net.state_dict(), 'epoch': 440}, tmp_path / 'a.pth')
    ckpt = read_checkpoint(str(tmp_path / 'a.pth'))
    assert (ckpt.kind, ckpt.epoch, ckpt.input_layer, ckpt.stats) == ('macer', 440, 'none', None)
    model = fit_model(ckpt, 'resnet110', 10, '--dataset cifar10')
    assert _same_weights(model, net) and not isinstance(model, nn.Sequential)


@pytest.mark.parametrize('data_parallel', [False, True])
def test_cohen_salman_format_gets_its_normalisation(tmp_path, data_parallel):
    net = resnet110().eval()
    prefix = '1.module.' if data_parallel else '1.'
    sd = {prefix + k: v for k, v in net.state_dict().items()}
    torch.save({'epoch': 90, 'arch': 'cifar_resnet110', 'state_dict': sd, 'optimizer': {'state': {}}},
               tmp_path / 'c.pth.tar')
    ckpt = read_checkpoint(str(tmp_path / 'c.pth.tar'))
    assert (ckpt.kind, ckpt.arch, ckpt.input_layer, ckpt.stats) == ('cohen', 'resnet110', None, 'cifar10')
    model = fit_model(ckpt, 'resnet110', 10, '--dataset cifar10').eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION['cifar10'])
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)
    # saved back, the model has Cohen's own keys
    assert set(model.state_dict()) == {'1.' + k for k in net.state_dict()}


def test_project_format(tmp_path):
    net = LeNet()
    torch.save({'format': FORMAT, 'net': net.state_dict(), 'epoch': 7, 'arch': 'lenet', 'normalization': None,
                'args': {'sigma': 0.25}}, tmp_path / 'p.pth')
    ckpt = read_checkpoint(str(tmp_path / 'p.pth'))
    assert (ckpt.kind, ckpt.epoch, ckpt.args) == ('project', 7, {'sigma': 0.25})
    assert _same_weights(fit_model(ckpt, 'lenet', 10, '--dataset digits'), net)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    torch.save({'net': LeNet().state_dict(), 'epoch': 1}, tmp_path / 'l.pth')
    with pytest.raises(UsageError, match=r'does not fit resnet110 \(--dataset cifar10\).*missing'):
        fit_model(read_checkpoint(str(tmp_path / 'l.pth')), 'resnet110', 10, '--dataset cifar10')
    sd = {'1.module.' + k: v for k, v in resnet110().state_dict().items()}
    torch.save({'arch': 'resnet50', 'state_dict': sd}, tmp_path / 'r.pth')
    with pytest.raises(UsageError, match='holds a resnet50, but --dataset cifar10 uses resnet110'):
        fit_model(read_checkpoint(str(tmp_path / 'r.pth')), 'resnet110', 10, '--dataset cifar10')
    torch.save({'arch': 'cifar_resnet20', 'state_dict': sd}, tmp_path / 'r20.pth')
    with pytest.raises(UsageError, match="'cifar_resnet20'.*not build"):
        read_checkpoint(str(tmp_path / 'r20.pth'))


def _files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'net': LeNet().state_dict(), 'epoch': 1}, good)
    data = good.read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_text('hello\n')
    (tmp_path / 'random.pth').write_bytes(os.urandom(4096))
    torch.save([1, 2, 3], tmp_path / 'list.pth')
    torch.save({'model': LeNet().state_dict()}, tmp_path / 'unknown.pth')
    return ['truncated', 'empty', 'text', 'random', 'list', 'unknown']


def test_files_that_are_not_checkpoints(tmp_path):
    for name in _files(tmp_path):
        with pytest.raises(UsageError, match=f'{name}.pth'):
            read_checkpoint(str(tmp_path / f'{name}.pth'))
    with pytest.raises(UsageError, match='does not exist'):
        read_checkpoint(str(tmp_path / 'absent.pth'))
    with pytest.raises(UsageError, match='is a folder'):
        read_checkpoint(str(tmp_path))


class Evil:
    """Unpickling this would run code: it creates the file `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (exec, (f'open({self.path!r}, "w").write("pwned")',))


def test_a_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / 'marker'
    torch.save({'net': Evil(str(marker)), 'epoch': 1}, tmp_path / 'evil.pth')
    with pytest.raises(UsageError, match='refusing checkpoint .*run code'):
        read_checkpoint(str(tmp_path / 'evil.pth'))
    assert not marker.exists()
    # and through main.py: one line on stderr, exit status 2, still nothing run
    r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', tmp_path / 'evil.pth', '--N', 10)
    assert r.returncode == 2
    assert r.stderr.count('\n') == 1 and r.stderr.startswith('error: refusing checkpoint')
    assert 'Traceback' not in r.stderr and not marker.exists()


def test_a_legacy_format_pickle_that_runs_code_is_one_line_and_no_warning(tmp_path):
    marker = tmp_path / 'marker'
    torch.save({'net': Evil(str(marker)), 'epoch': 1}, tmp_path / 'old.pth', _use_new_zipfile_serialization=False)
    r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', tmp_path / 'old.pth', '--N', 10)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and r.stderr.startswith('error: refusing checkpoint')
    assert not marker.exists()


def test_main_gives_one_line_errors_for_bad_checkpoints(tmp_path):
    _files(tmp_path)
    for name in ('truncated', 'list'):
        r = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', tmp_path / f'{name}.pth',
                     '--matdir', tmp_path / 'mat')
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
        assert f'{name}.pth' in r.stderr
    r = run_main('--task', 'test', '--dataset', 'cifar10', '--resume_ckpt', tmp_path / 'good.pth', '--no_download')
    assert r.returncode == 2 and 'does not fit resnet110' in r.stderr and r.stderr.count('\n') == 1


def test_a_salman_model_behind_a_centring_layer_loads_as_it_was_trained(tmp_path):
    """Salman et al. saved Sequential(InputCenterLayer, net): nothing in the file says so, --input_layer does."""
    from checkpoint import load_model
    from model import InputCenterLayer
    torch.manual_seed(0)
    trained = nn.Sequential(InputCenterLayer(NORMALIZATION['cifar10'][0]), resnet110()).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save({'epoch': 150, 'arch': 'cifar_resnet110', 'state_dict': trained.state_dict()}, tmp_path / 's.pth.tar')
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = trained(x)
        centred = load_model(str(tmp_path / 's.pth.tar'), 'cifar10', input_layer='center')(x)
        normalised = load_model(str(tmp_path / 's.pth.tar'), 'cifar10')(x)  # Cohen's layer, the default
    assert torch.equal(centred, expected)
    assert not torch.allclose(normalised, expected, atol=1e-2)
    assert isinstance(load_model(str(tmp_path / 's.pth.tar'), 'cifar10', 'center')[0], InputCenterLayer)
    with pytest.raises(UsageError, match="input layer 'none'"):  # a project file keeps what it records
        torch.save({'net': LeNet().state_dict(), 'epoch': 1}, tmp_path / 'm.pth')
        load_model(str(tmp_path / 'm.pth'), 'digits', input_layer='center')


def test_the_readme_python_example_runs_and_agrees_with_the_command_line(tmp_path):
    """The README's "Python API" example, run as written, gives the certificate main.py gives."""
    import re
    import subprocess
    import sys
    from conftest import ROOT
    readme = open(os.path.join(ROOT, 'README.md')).read()
    section = readme.split('## Python API', 1)[1].split('\n## ', 1)[0]
    code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    printed = re.search(r'label (\d+), prediction (-?\d+), certified L2 radius ([\d.]+)', r.stdout)
    assert printed, r.stdout
    assert run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', os.path.join('checkpoints',
                    'digits-macer-0.25.pth'), '--sigma', '0.25', '--start_img', '0', '--num_img', '1', '--N',
                    '10000', '--certify_batch', '1000', '--mode', 'hard', '--quiet', '--matdir', tmp_path,
                    '--name', 'one').returncode == 0
    row = open(tmp_path / 'one.hard.tsv').read().splitlines()[1].split('\t')
    assert (row[1], row[2], f'{float(row[3]):.3f}') == printed.groups()
