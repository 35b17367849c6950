"""The bad-input battery: each mistake ends with one line naming the problem and the fix, a non-zero
exit, and every existing file untouched."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import main
from conftest import run_main, snapshot
from model import LeNet


REMOVED = object()  # a key the odd checkpoint lacks


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
    os.symlink(root / 'loop_b.pth', root / 'loop_a.pth')
    os.symlink(root / 'loop_a.pth', root / 'loop_b.pth')
    full = torch.load(root / 'ck' / 'latest.pth', weights_only=True)
    # odd checkpoints: each a copy of the training run's latest.pth with one part changed
    odd = {'epoch_text': {'epoch': 'abc'}, 'epoch_none': {'epoch': None}, 'epoch_nan': {'epoch': float('nan')},
           'epoch_huge': {'epoch': 10 ** 9}, 'layer_unknown': {'normalization': 'cifar100'},
           'layer_cifar_on_lenet': {'normalization': 'cifar10', 'input_layer': 'normalize'},
           'int_keys': {'net': {i: v for i, v in enumerate(full['net'].values())}},
           'nan_weights': {'net': {k: v.clone().fill_(float('nan')) if k == 'fc2.weight' else v
                                   for k, v in full['net'].items()}},
           'rng_empty': {'rng': {}}, 'optimizer_empty': {'optimizer': {}}, 'scheduler_text': {'scheduler': 'step'},
           'history_int': {'history': 7}, 'no_net': {'net': REMOVED},
           'momentum_shape': {'optimizer': {**full['optimizer'], 'state': {
               i: {'momentum_buffer': torch.zeros(3)} for i in full['optimizer']['state']}}}}
    for name, change in odd.items():
        torch.save({k: v for k, v in {**full, **change}.items() if v is not REMOVED}, root / f'{name}.pth')
    # odd result folders: copies of the finished certification with one part changed
    for name in ('id_null', 'id_text', 'tsv_folder', 'tsv_bytes', 'tsv_edited', 'tsv_abstain', 'tsv_label'):
        shutil.copytree(root / 'mat', root / name)
    for name, identity in (('id_null', None), ('id_text', 'sha256')):
        record = json.loads((root / name / '8.json').read_text())
        (root / name / '8.json').write_text(json.dumps({**record, 'identity': identity}))
    (root / 'tsv_folder' / '8.soft.tsv').unlink()
    (root / 'tsv_folder' / '8.soft.tsv').mkdir()
    with open(root / 'tsv_bytes' / '8.hard.tsv', 'ab') as f:
        f.write(b'3\t\xff\xfe\t0\t0.0\t0\t0:00:00.1\n')
    edit_row(root / 'tsv_edited' / '8.hard.tsv', 2, radius='9.99')
    edit_row(root / 'tsv_abstain' / '8.hard.tsv', 1, predict='-1', radius='0.2', correct='0')
    edit_row(root / 'tsv_label' / '8.hard.tsv', 0, label='9', correct='0')
    return root


def edit_row(path, row, **changes):
    """Change fields of data row `row` (0-based) of a certification log, as a hand edit would."""
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[1 + row].rstrip('\n').split('\t')
    columns = lines[0].rstrip('\n').split('\t')
    for key, value in changes.items():
        fields[columns.index(key)] = value
    lines[1 + row] = '\t'.join(fields) + '\n'
    path.write_text(''.join(lines))


TEST = ['--task', 'test', '--dataset', 'digits', '--N', '100', '--quiet']
TRAIN = ['--task', 'train', '--dataset', 'digits', '--epochs', '1', '--quiet']
# the workspace's certification, to resume into the odd result folders
CERTIFIED = TEST + ['--start_img', '0', '--num_img', '3']
# the workspace's training run, to resume from the odd checkpoints (no --ckptdir: nothing is written)
RESUME = TRAIN + ['--gauss_num', '2', '--epochs', '2']


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
        (TEST + ['--resume_ckpt', ckpt, '--alpha', '0'], '--alpha: must lie strictly between 0 and 1/2'),
        (TEST + ['--resume_ckpt', ckpt, '--alpha', '1.5'], '--alpha: must lie strictly between 0 and 1/2'),
        (TEST + ['--resume_ckpt', ckpt, '--alpha', '0.5'], '--alpha: must lie strictly between 0 and 1/2'),
        (TEST + ['--resume_ckpt', ckpt, '--alpha', '1e-320'], 'the confidence bounds overflow'),
        (TEST + ['--resume_ckpt', ckpt, '--alpha', 'abc'], '--alpha: must be a number strictly between 0 and 1/2'),
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
        (TRAIN + ['--method', 'consistency', '--eta', '-0.5'], '--eta: must be a number >= 0'),
        (TRAIN + ['--method', 'stability', '--lbd', 'abc'], '--lbd: must be a number >= 0'),
        (TRAIN + ['--method', 'smoothmix', '--step_size', '0'], '--step_size: must be a positive number'),
        (TRAIN + ['--method', 'smoothmix', '--mix_step', '-1'], '--mix_step: must be an integer >= 0'),
        (TRAIN + ['--method', 'smoothmix', '--maxnorm', '0'], '--maxnorm: must be a positive number'),
        (TRAIN + ['--method', 'smoothmix', '--warmup', '0'], '--warmup: must be an integer >= 1'),
        (TRAIN + ['--method', 'smoothmix', '--num_steps', '2', '--mix_step', '2'],
         '--mix_step 2 must be below --num_steps 2'),
        (TRAIN + ['--method', 'consistency', '--adv_training', '--num_steps', '0'], '--num_steps: must be an integer >= 1'),
        (TRAIN + ['--method', 'mixup'], 'invalid choice'),
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
        (TRAIN + ['--epochs', '2', '--ckptdir', ws / 'ck', '--resume_ckpt', ws / 'ck' / 'latest.pth', '--method',
                  'smoothmix'], 'trained with other arguments (--method macer there, smoothmix now'),
        (RESUME + ['--ckptdir', ws / 'ck', '--resume_ckpt', ws / 'ck' / 'latest.pth', '--method', 'smoothmix'],
         '--gauss_num is a flag of macer and gaussian, not of --method smoothmix'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'mat', '--start_img', '0', '--num_img', '3', '--N', '200'],
         'holds results made with other arguments'),
        (TRAIN + ['--precision', 'fp16', '--device', 'cpu'], '--precision fp16 needs CUDA'),
        (TRAIN + ['--precision', 'tf32', '--device', 'cpu'], '--precision tf32 is a mode of NVIDIA GPUs'),
        (TRAIN + ['--dist_timeout', '0'], '--dist_timeout: must be a positive number'),
        (TEST + ['--resume_ckpt', ckpt, '--precision', 'tf32'], '--precision tf32 is a mode of NVIDIA GPUs'),
        (TRAIN + ['--normalize'], 'there are none for digits (only cifar10, imagenet); add --input_layer none'),
        (TRAIN + ['--device', 'tpu'], '--device'),
        # checkpoints that are not regular files, or not what they claim
        (TEST + ['--resume_ckpt', '/dev/zero'], 'is a device, not a file'),
        (TEST + ['--resume_ckpt', ws / 'loop_a.pth'], 'is a loop of symbolic links'),
        (TEST + ['--resume_ckpt', ws / 'epoch_text.pth'], "its epoch is 'abc', not a non-negative integer"),
        (TEST + ['--resume_ckpt', ws / 'epoch_none.pth'], 'its epoch is None, not a non-negative integer'),
        (TEST + ['--resume_ckpt', ws / 'epoch_nan.pth'], 'its epoch is nan, not a non-negative integer'),
        (RESUME + ['--resume_ckpt', ws / 'epoch_huge.pth'], 'is at epoch 1000000000, past --epochs 2'),
        (TEST + ['--resume_ckpt', ws / 'layer_unknown.pth'], "its normalization is 'cifar100', which this tool"),
        (TEST + ['--resume_ckpt', ws / 'layer_cifar_on_lenet.pth'], 'puts cifar10 statistics (3 channels) in front '
                                                                    'of a lenet, which takes 1'),
        (TEST + ['--resume_ckpt', ws / 'int_keys.pth'], 'its weights are keyed by int 0'),
        (TEST + ['--resume_ckpt', ws / 'no_net.pth'], "has this project's format but no weights"),
        (TEST + ['--resume_ckpt', ws / 'nan_weights.pth'], 'holds non-finite weights (NaN or infinity in fc2.weight)'),
        (RESUME + ['--resume_ckpt', ws / 'nan_weights.pth'], 'holds non-finite weights'),
        (TEST + ['--resume_ckpt', ws / 'ck' / 'latest.pth', '--dataset', 'mnist'],
         'was trained on digits, not mnist: use --dataset digits'),
        (TEST + ['--resume_ckpt', ws / 'ck' / 'latest.pth', '--input_layer', 'center'],
         "was trained with input layer 'none'"),
        # resuming from damaged training state
        (RESUME + ['--resume_ckpt', ws / 'rng_empty.pth'], 'its random-number state is damaged'),
        (RESUME + ['--resume_ckpt', ws / 'optimizer_empty.pth'], 'its optimiser state is damaged'),
        (RESUME + ['--resume_ckpt', ws / 'momentum_shape.pth'], 'a momentum buffer of another shape'),
        (RESUME + ['--resume_ckpt', ws / 'scheduler_text.pth'], 'its scheduler state is damaged'),
        (RESUME + ['--resume_ckpt', ws / 'history_int.pth'], 'its history (the log of its epochs) is damaged'),
        # result folders that are damaged, edited or not this tool's
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'id_null'], 'is not a result summary of this tool'),
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'id_text'], 'is not a result summary of this tool'),
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'tsv_folder'], '8.soft.tsv is a folder, not a log'),
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'tsv_bytes'], '8.hard.tsv, line 5, holds bytes that are '
                                                                          'not text'),
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'tsv_edited'],
         '8.hard.tsv, line 4: radius 9.99 is outside [0, 0.3751], all that N = 100 can certify'),
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'tsv_abstain'],
         'line 3: an abstention (prediction -1) has radius 0.2, not 0'),
        (CERTIFIED + ['--resume_ckpt', ckpt, '--matdir', ws / 'tsv_label'], 'line 2: label 9 is not the label of test '
                                                                          'image 0'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'mat', '--name', '../x'], '--name: must be a plain file name'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'mat', '--name', ''], '--name: must be a plain file name'),
        (TEST + ['--resume_ckpt', ckpt, '--matdir', ws / 'mat', '--name', '.hidden'], '--name: must be a plain file'),
        # a preset's flag the data set cannot take says how to unset it
        (TRAIN + ['--preset', 'cifar10-cohen-0.25', '--dataset', 'digits'],
         '--preset cifar10-cohen-0.25 puts an input layer with channel statistics in front of the model, and there '
         'are none for digits (only cifar10, imagenet); add --input_layer none'),
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
