"""The bad-input battery: each mistake ends with one line naming the problem and the fix, a non-zero
exit, and every existing file untouched."""
import os

import numpy as np
import pytest
import torch

import main
from conftest import run_main, snapshot
from model import LeNet


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, digits_lenet):
    """A folder holding a finished training run and a finished certification, to be left alone."""
    root = tmp_path_factory.mktemp('ws')
    assert main.main(['--task', 'train', '--dataset', 'digits', '--epochs', '1', '--gauss_num', '2', '--quiet',
                      '--ckptdir', str(root / 'ck')]) == 0
    assert main.main(['--task', 'test', '--dataset', 'digits', '--resume_ckpt', digits_lenet, '--matdir',
                      str(root / 'mat'), '--start_img', '0', '--num_img', '3', '--N', '100', '--quiet']) == 0
    (root / 'empty').mkdir()
    (root / 'a_file').write_text('not a folder\n')
    bad = root / 'bad-mnist' / 'MNIST' / 'raw'
    bad.mkdir(parents=True)
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                 't10k-labels-idx1-ubyte'):
        (bad / name).write_bytes(os.urandom(100))
    good = root / 'lenet.pth'
    torch.save({'net': LeNet().state_dict(), 'epoch': 1}, good)
    data = good.read_bytes()
    (root / 'truncated.pth').write_bytes(data[: len(data) // 3])
    torch.save({'weights': [1, 2]}, root / 'other.pth')
    (root / 'a_folder.pth').mkdir()
    os.symlink(root / 'nowhere.pth', root / 'dangling.pth')
    return root


TEST = ['--task', 'test', '--dataset', 'digits', '--N', '100', '--quiet']
TRAIN = ['--task', 'train', '--dataset', 'digits', '--epochs', '1', '--quiet']


def cases(ws, ckpt):
    """(arguments, words the one-line message must contain)."""
    return [
        (['--dataset', 'cifar100'], 'invalid choice'),
        (['--method', 'trades'], 'invalid choice'),
        (TEST + ['--resume_ckpt', ckpt, '--mode', 'median'], 'invalid choice'),
        (['--task', 'bench'], 'invalid choice'),
        (TRAIN + ['--dataset', 'mnist', '--root', ws / 'missing', '--no_download'], 'no readable copy'),
        (TRAIN + ['--dataset', 'mnist', '--root', ws / 'empty', '--no_download'], 'put train-images-idx3-ubyte'),
        (TRAIN + ['--dataset', 'mnist', '--root', ws / 'bad-mnist', '--no_download'], 'cannot be read as mnist'),
        (TRAIN + ['--dataset', 'imagenet', '--root', ws / 'empty'], 'cannot be downloaded automatically'),
        (TRAIN + ['--sigma', '0'], '--sigma: must be a positive number'),
        (TRAIN + ['--sigma', '-0.25'], '--sigma: must be a positive number'),
        (TRAIN + ['--sigma', 'nan'], '--sigma: must be a positive number'),
        (TRAIN + ['--sigma', 'abc'], '--sigma: must be a positive number'),
        (TEST + ['--resume_ckpt', ckpt, '--N0', '0'], '--N0: must be an integer >= 1'),
        (TEST + ['--resume_ckpt', ckpt, '--N', '-5'], '--N: must be an integer >= 1'),
        (TEST + ['--resume_ckpt', ckpt, '--alpha', '0'], '--alpha: must be a number strictly between 0 and 1'),
        (TEST + ['--resume_ckpt', ckpt, '--alpha', '1.5'], '--alpha: must be a number strictly between 0 and 1'),
        (TEST + ['--resume_ckpt', ckpt, '--start_img', '1000'], 'past the end of the digits test set'),
        (TEST + ['--resume_ckpt', ckpt, '--start_img', '0', '--skip', '5000', '--num_img', '2'], 'use --num_img 1'),
        (TEST + ['--resume_ckpt', ckpt, '--skip', '0'], '--skip: must be an integer >= 1'),
        (TEST + ['--resume_ckpt', ckpt, '--certify_batch', '0'], '--certify_batch: must be an integer >= 1'),
        (TRAIN + ['--batch_size', '0'], '--batch_size: must be an integer >= 1'),
        (TRAIN + ['--batch_size', '-64'], '--batch_size: must be an integer >= 1'),
        (TRAIN + ['--epochs', '0'], '--epochs: must be an integer >= 1'),
        (TRAIN + ['--gauss_num', '0'], '--gauss_num: must be an integer >= 1'),
        (TRAIN + ['--lr', '-0.1'], '--lr: must be a positive number'),
        (TRAIN + ['--lr_milestones', '20', '10'], 'must increase strictly'),
        (TRAIN + ['--epsilon', '1/0'], '--epsilon'),
        (TEST, '--task test certifies a checkpoint'),
        (TEST + ['--resume_ckpt', ws / 'nowhere.pth'], 'does not exist'),
        (TEST + ['--resume_ckpt', ws / 'dangling.pth'], 'does not exist'),
        (TEST + ['--resume_ckpt', ws / 'a_folder.pth'], 'is a folder'),
        (TEST + ['--resume_ckpt', ws / 'truncated.pth'], 'truncated or not a PyTorch checkpoint'),
        (TEST + ['--resume_ckpt', ws / 'other.pth'], 'none of the known formats'),
        (TEST + ['--resume_ckpt', ws / 'lenet.pth', '--dataset', 'cifar10', '--no_download'],
         'does not fit resnet110'),
        (TEST + ['--resume_ckpt', ws / 'lenet.pth', '--arch', 'resnet110'], 'takes 3x32x32 inputs'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'a_file'], 'is a file, not a folder'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'a_file' / 'below'], 'cannot create the folder'),
        (TRAIN + ['--ckptdir', ws / 'a_file' / 'below'], 'cannot create the folder'),
        (TRAIN + ['--ckptdir', ws / 'ck'], 'already holds a run'),
        (TRAIN + ['--ckptdir', ws / 'ck', '--resume_ckpt', ws / 'ck' / 'latest.pth', '--sigma', '0.5', '--epochs', '2'],
         'trained with other arguments'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'mat', '--start_img', '0', '--num_img', '3', '--N', '200'],
         'holds results made with other arguments'),
        (TRAIN + ['--precision', 'fp16', '--device', 'cpu'], '--precision fp16 needs CUDA'),
        (TRAIN + ['--normalize'], 'there are none for digits (only cifar10, imagenet); add --input_layer none'),
        (TRAIN + ['--device', 'tpu'], '--device'),
    ]


def run(args, capsys):
    try:
        code = main.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_every_bad_input_is_one_clear_line_and_touches_nothing(workspace, digits_lenet, capsys):
    before = snapshot(workspace)
    failures = []
    for args, words in cases(workspace, digits_lenet):
        code, err = run(args, capsys)
        lines = err.strip().splitlines()
        if code == 0 or len(lines) != 1 or words not in lines[0] or 'Traceback' in err:
            failures.append(f'{" ".join(map(str, args))}: exit {code}, {err!r}')
    assert not failures, '\n'.join(failures)
    assert snapshot(workspace) == before


def test_a_real_process_exits_2_with_one_line(workspace, digits_lenet):
    for args in (['--sigma', '-1'], TEST + ['--resume_ckpt', workspace / 'truncated.pth']):
        r = run_main(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files whatever their permissions')
def test_an_unreadable_checkpoint(workspace, capsys):
    path = workspace / 'unreadable.pth'
    torch.save({'net': LeNet().state_dict(), 'epoch': 1}, path)
    path.chmod(0)
    try:
        code, err = run(TEST + ['--resume_ckpt', path], capsys)
    finally:
        path.chmod(0o644)
    assert code == 2 and 'is not readable' in err


def test_a_slim_checkpoint_cannot_resume_training(workspace, capsys, tmp_path):
    content = torch.load(workspace / 'ck' / 'latest.pth', weights_only=True)
    for key in ('optimizer', 'scheduler', 'rng'):
        content.pop(key)
    torch.save(content, tmp_path / 'slim.pth')
    code, err = run(TRAIN + ['--epochs', '2', '--resume_ckpt', tmp_path / 'slim.pth', '--gauss_num', '2'], capsys)
    assert code == 2 and 'holds weights only' in err
    assert np.isfinite(float(content['history'][0]['classification']))
