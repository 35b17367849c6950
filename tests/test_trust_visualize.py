"""Results you can trust (issue 19): training curves draw the run's own certifications, output sets are
written whole, load_model refuses what does not fit, a lock file that is a folder is named as one."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io as sio

from conftest import ROOT, certification, run_without_torch

sys.path.insert(0, os.path.join(ROOT, 'visualize'))
import plotcurves  # noqa: E402
import trainingcurves  # noqa: E402
from plumbing import outputs  # noqa: E402
from plumbing.errors import UsageError  # noqa: E402
from plumbing.locks import FolderLock  # noqa: E402
from plumbing.outputs import run_command, text_writer, write_together  # noqa: E402

# a figure's PDF records its creation time unless this is set: then two writes of one figure are equal bytes
DETERMINISTIC = {'SOURCE_DATE_EPOCH': '0'}


# --- item 5: the certified ACR of a training run is that run's --------------------------------------------

def make_run(folder, run_id, epochs=4, with_checkpoint=True):
    """A training run's folder: log.jsonl and (unless told not to) latest.pth naming `run_id`, as torch.save
    writes it (None: a checkpoint from before run identities, with only its history)."""
    import torch
    folder.mkdir()
    history = [{'epoch': e, 'lr': 0.01, 'classification': 1.0 / e, 'seconds': 1.0 + e} for e in range(1, epochs + 1)]
    (folder / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in history))
    if with_checkpoint:
        content = {'format': 'macer-reimpl/1', 'net': {'w': torch.ones(2)}, 'epoch': epochs, 'history': history,
                   'optimizer': {'state': {0: {'momentum_buffer': torch.zeros(2)}}}, 'rng': {'torch': torch.get_rng_state()}}
        if run_id is not None:
            content['run_id'] = run_id
        torch.save(content, folder / 'latest.pth')
    return str(folder / 'log.jsonl')


def test_trainingcurves_draws_only_the_certifications_of_the_run_whose_log_it_draws(tmp_path, capsys):
    log = make_run(tmp_path / 'ck', 'run-a')
    mat = tmp_path / 'mat'
    mat.mkdir()
    two = certification(mat, 2, 'macer', 'run-a')
    four = certification(mat, 4, 'gaussian', 'run-a')
    certification(mat, 1, 'smoothadv', 'run-b')         # another run certified into the same --matdir
    certification(mat, 3, 'smoothadv')                  # --task test of some checkpoint: no run recorded
    certification(mat, 6, 'smoothadv', 'run-a', N=100)  # this run, but another N than its others
    certification(mat, 8, 'smoothadv', 'run-a', epoch=5)  # this run's epoch 5, named 8
    certification(mat, 10, 'smoothadv', 'run-a', status='running')
    acr, notes = trainingcurves.certified_acr(str(mat), log)
    assert acr == {2: two, 4: four} and two != four
    text = '\n'.join(notes)
    assert '1.json, certifications of other training runs' in text
    assert '3.json, which record no training run' in text
    assert '6.json, made with N 100, not the N 200 of the run\'s other certifications' in text
    assert '8.json, certifications of the run at another epoch' in text
    assert len(notes) == 4 and all('\n' not in n for n in notes)

    # the command prints the notes and draws the run's two points only
    capsys.readouterr()
    assert trainingcurves.main([log, '--matdirs', str(mat), '--out', str(tmp_path / 'curves')]) == 0
    out = capsys.readouterr().out
    assert out.count('note: ') == 5 and 'the bars around each certified ACR' in out and 'wrote ' in out
    logs = [trainingcurves.read_log(log)]
    fig = trainingcurves.figure(['a'], logs, [acr])
    panel = next(ax for ax in fig.axes if ax.get_title() == 'certified ACR (hard)')
    assert [list(line.get_xdata()) for line in panel.lines] == [[2, 4]]
    assert [list(line.get_ydata()) for line in panel.lines] == [[two, four]]


def test_a_tie_between_settings_goes_to_the_latest_certification(tmp_path):
    log = make_run(tmp_path / 'ck', 'run-a')
    mat = tmp_path / 'mat'
    mat.mkdir()
    certification(mat, 2, 'macer', 'run-a', sigma=0.5)
    four = certification(mat, 4, 'macer', 'run-a')
    acr, notes = trainingcurves.certified_acr(str(mat), log)
    assert acr == {4: four}
    assert notes == [f'{mat}: left out 2.json, made with sigma 0.5, not the sigma 0.25 of the run\'s other '
                     f'certifications']


def test_a_run_from_before_run_identities_is_named_as_training_names_it(tmp_path):
    import resume
    from checkpoint import read_checkpoint
    log = make_run(tmp_path / 'ck', None)
    legacy = resume.run_id_of(read_checkpoint(str(tmp_path / 'ck' / 'latest.pth')))
    assert legacy.startswith('legacy-') and trainingcurves.run_of(log) == (legacy, '')
    mat = tmp_path / 'mat'
    mat.mkdir()
    two = certification(mat, 2, 'macer', legacy)
    certification(mat, 4, 'gaussian', 'legacy-0123456789abcdef')
    assert trainingcurves.certified_acr(str(mat), log)[0] == {2: two}


def test_certifications_of_a_log_without_its_checkpoint_are_refused_with_one_line(tmp_path, capsys):
    log = make_run(tmp_path / 'copied', 'run-a', with_checkpoint=False)
    mat = tmp_path / 'mat'
    mat.mkdir()
    certification(mat, 2, 'macer', 'run-a')
    assert trainingcurves.main([log, '--matdirs', str(mat), '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'cannot tell which certifications there are of the run of' in err and 'give - for it' in err
    assert err.count('\n') == 1 and not os.path.exists(tmp_path / 'o.png')
    (tmp_path / 'copied' / 'latest.pth').write_text('not a checkpoint')
    assert trainingcurves.main([log, '--matdirs', str(mat), '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'latest.pth beside it is not a checkpoint of this tool' in err and err.count('\n') == 1
    assert trainingcurves.main([log, '--matdirs', '-', '--out', str(tmp_path / 'o')]) == 0


def test_the_run_is_read_from_its_checkpoint_without_torch(tmp_path):
    log = make_run(tmp_path / 'ck', 'run-a')
    mat = tmp_path / 'mat'
    mat.mkdir()
    certification(mat, 2, 'macer', 'run-a')
    certification(mat, 4, 'gaussian', 'run-b')
    r = run_without_torch(os.path.join(ROOT, 'visualize', 'trainingcurves.py'), log, '--matdirs', mat, '--out',
                          tmp_path / 'o')
    assert r.returncode == 0, r.stderr
    assert 'left out 4.json, certifications of other training runs' in r.stdout
    assert (tmp_path / 'o.png').exists() and (tmp_path / 'o.pdf').exists()


# --- item 6: outputs written as one set ------------------------------------------------------------------

def files_of(folder):
    return {n: open(os.path.join(folder, n), 'rb').read() for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n))}


def test_a_failing_writer_in_the_middle_leaves_every_earlier_output_as_it_was(tmp_path):
    outs = [str(tmp_path / n) for n in ('o.md', 'o.tex', 'o.csv')]
    write_together([(p, text_writer(f'old {i}\n')) for i, p in enumerate(outs)], 'o.*')
    before = files_of(tmp_path)

    def broken(tmp):
        raise OSError(5, 'Input/output error')
    with pytest.raises(UsageError, match=r'cannot write o\.\* \(\[Errno 5\] Input/output error\): no output was '
                                         r'changed, every file of the set is as it was before'):
        write_together([(outs[0], text_writer('new\n')), (outs[1], broken), (outs[2], text_writer('new\n'))], 'o.*')
    assert files_of(tmp_path) == before and sorted(os.listdir(tmp_path)) == ['.o.macer-outputs', 'o.csv', 'o.md', 'o.tex']


def test_a_failing_rename_puts_back_every_file_already_renamed(tmp_path, monkeypatch):
    outs = [str(tmp_path / n) for n in ('o.md', 'o.tex', 'o.csv')]
    write_together([(p, text_writer('old\n')) for p in outs[:2]], 'o.*')  # o.csv is new in the next set
    before = files_of(tmp_path)
    real = os.replace
    calls = []

    def replace(src, dst):
        if dst not in outs:
            return real(src, dst)  # the record of the set's outputs (.o.macer-outputs)
        calls.append(dst)
        if len(calls) == 3:  # the third rename, after two files were already new
            raise OSError(28, 'No space left on device')
        return real(src, dst)
    monkeypatch.setattr(outputs.os, 'replace', replace)
    monkeypatch.setattr(outputs, 'is_disk_full', lambda e, folder: e.errno == 28)
    with pytest.raises(outputs.DiskFull, match='no output was changed, every file of the set is as it was before; '
                                              'free some space'):
        write_together([(p, text_writer('new\n')) for p in outs], 'o.*')
    assert files_of(tmp_path) == before and sorted(os.listdir(tmp_path)) == ['.o.macer-outputs', 'o.md', 'o.tex']


def test_when_putting_a_file_back_fails_the_error_names_the_mix(tmp_path, monkeypatch):
    outs = [str(tmp_path / n) for n in ('o.md', 'o.tex', 'o.csv')]
    write_together([(p, text_writer('old\n')) for p in outs], 'o.*')
    real = os.replace
    calls = []

    def replace(src, dst):
        if dst not in outs:
            return real(src, dst)  # the record of the set's outputs (.o.macer-outputs)
        calls.append(dst)
        if len(calls) in (3, 4):  # the third rename fails, and so does putting back o.tex
            raise OSError(5, 'Input/output error')
        return real(src, dst)
    monkeypatch.setattr(outputs.os, 'replace', replace)
    with pytest.raises(UsageError) as e:
        write_together([(p, text_writer('new\n')) for p in outs], 'o.*')
    message = str(e.value)
    assert f'the set is mixed: {outs[1]} new, every other file as before' in message and '\n' not in message
    aside = message.split(f'the previous {outs[1]} is ')[1].split(')')[0]
    # what the message says is what is on disk: o.tex new, its previous version kept aside, the others old
    assert [open(p).read() for p in outs] == ['old\n', 'new\n', 'old\n'] and open(aside).read() == 'old\n'


def test_plotcurves_with_a_folder_in_the_way_changes_nothing(tmp_path, capsys):
    sio.savemat(tmp_path / 'a.mat', {'hard': np.array([0.3, -1.0])})
    sio.savemat(tmp_path / 'b.mat', {'hard': np.array([0.6, 0.7])})
    out = tmp_path / 'figs'
    out.mkdir()
    assert plotcurves.main([str(tmp_path / 'a.mat'), '--out', str(out / 'o')]) == 0
    os.unlink(out / 'o.tex')
    (out / 'o.tex').mkdir()  # a folder where the table goes
    before = files_of(out)
    capsys.readouterr()
    assert plotcurves.main([str(tmp_path / 'b.mat'), '--out', str(out / 'o')]) == 2
    err = capsys.readouterr().err
    assert f'{out / "o.tex"} is a folder; move it away' in err and err.count('\n') == 1
    assert files_of(out) == before and sorted(os.listdir(out)) == ['.o.macer-outputs', 'o.csv', 'o.md', 'o.pdf', 'o.png', 'o.tex']


def test_run_command_says_what_was_written_before_an_error(tmp_path, capsys):
    def fails_before_writing():
        open(tmp_path / 'missing' / 'input')
    assert run_command(fails_before_writing, 'o.*') == 2
    err = capsys.readouterr().err
    assert err == f'error: No such file or directory ({tmp_path / "missing" / "input"}); no output was written ' \
                  f'(o.* as before)\n'

    def fails_after_writing():
        write_together([(str(tmp_path / 'o.md'), text_writer('x'))], 'o.md')
        raise OSError(5, 'Input/output error')
    assert run_command(fails_after_writing, 'o.*') == 2
    assert capsys.readouterr().err == 'error: Input/output error; o.md had been written before it, complete\n'


def test_a_second_command_for_a_locked_set_is_refused_with_one_line_and_changes_nothing(tmp_path, capsys,
                                                                                        monkeypatch):
    sio.savemat(tmp_path / 'a.mat', {'hard': np.array([0.3, -1.0])})
    assert plotcurves.main([str(tmp_path / 'a.mat'), '--out', str(tmp_path / 'o')]) == 0
    before = files_of(tmp_path)
    monkeypatch.setattr(outputs, 'OUTPUT_LOCK_WAIT', 0.2)
    capsys.readouterr()
    with FolderLock(str(tmp_path / '.o.png.lock'), 'the set', 'choose another --out'):
        assert plotcurves.main([str(tmp_path / 'a.mat'), '--title', 'new', '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert f'{tmp_path / "o"}.* is in use by process {os.getpid()}' in err and err.count('\n') == 1
    assert files_of(tmp_path) == before


def test_two_processes_writing_one_set_never_mix_it(tmp_path, monkeypatch):
    """The first holds the set's lock while it writes (its figures wait for a go); the second, started then,
    waits for it and writes its own whole set after it: the outputs are the second's, every one of them."""
    for name, radii in (('a', [0.3, -1.0]), ('b', [0.6, 0.7, 1.1])):
        sio.savemat(tmp_path / f'{name}.mat', {'hard': np.array(radii)})
    env = {**os.environ, **DETERMINISTIC}
    go = tmp_path / 'go'
    held = ('import os, sys, time, runpy, matplotlib.figure\n'
            'save = matplotlib.figure.Figure.savefig\n'
            'def held(self, *args, **kwargs):\n'
            f'    while not os.path.exists({str(go)!r}):\n'
            '        time.sleep(0.01)\n'
            '    return save(self, *args, **kwargs)\n'
            'matplotlib.figure.Figure.savefig = held\n'
            'sys.argv = sys.argv[1:]\n'
            'runpy.run_path(sys.argv[0], run_name="__main__")\n')
    script = os.path.join(ROOT, 'visualize', 'plotcurves.py')
    out = tmp_path / 'figs' / 'o'
    first = subprocess.Popen([sys.executable, '-c', held, script, str(tmp_path / 'a.mat'), '--out', str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    second = None
    try:
        lock = tmp_path / 'figs' / '.o.png.lock'
        deadline = time.monotonic() + 60
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock.exists(), first.communicate()
        second = subprocess.Popen([sys.executable, script, str(tmp_path / 'b.mat'), '--out', str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        note = second.stdout.readline()  # printed once it finds the set locked
        assert f'note: {out}.* is in use by process {first.pid}' in note and 'waiting' in note, note
    finally:
        go.write_text('')
    first_out, first_err = first.communicate(timeout=120)
    second_out, second_err = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (first_err, second_err)
    written = files_of(tmp_path / 'figs')
    # no temporary, no lock left; the record of the outputs beside them
    assert sorted(written) == ['.o.macer-outputs'] + [f'o{ext}' for ext in sorted(plotcurves.OUTPUTS)]

    # the second's set, whole: each file as a run of its own writes it
    for key, value in DETERMINISTIC.items():
        monkeypatch.setenv(key, value)
    assert plotcurves.main([str(tmp_path / 'b.mat'), '--out', str(tmp_path / 'ref' / 'o')]) == 0
    assert written == files_of(tmp_path / 'ref')


def test_a_label_matplotlib_cannot_typeset_is_one_line_and_writes_nothing(tmp_path, capsys):
    sio.savemat(tmp_path / 'a.mat', {'hard': np.array([0.3, -1.0])})
    assert plotcurves.main([str(tmp_path / 'a.mat'), '--labels', '$\\foo$', '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'cannot typeset \'$\\\\foo$\'' in err and 'read as TeX math' in err and err.count('\n') == 1
    assert sorted(os.listdir(tmp_path)) == ['a.mat']


# --- item 9: a lock file that is a folder ------------------------------------------------------------------

def test_a_lock_file_that_is_a_folder_is_named_as_one(tmp_path):
    (tmp_path / '.o.png.lock').mkdir()
    with pytest.raises(UsageError) as e:
        FolderLock(str(tmp_path / '.o.png.lock'), 'o.*', 'choose another --out').acquire()
    assert str(e.value) == f'{tmp_path / ".o.png.lock"} is a folder, not a lock file; move it away'


# --- item 8: load_model refuses what does not fit, as the command line does -------------------------------

@pytest.fixture(scope='module')
def cohen_resnet110(tmp_path_factory):
    """A Cifar-10 ResNet-110 in Cohen's format (`1.` before every key, no input layer recorded)."""
    import torch
    from model import build_model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('cohen') / 'cifar10-resnet110.pth.tar'
    net = build_model('resnet110', 10)
    torch.save({'arch': 'cifar_resnet110', 'state_dict': {'1.' + k: v for k, v in net.state_dict().items()}}, path)
    return str(path)


@pytest.mark.parametrize('args, kwargs, message', [
    ((None, 'digits'), {}, 'load_model: the checkpoint path is None, not a file name'),
    (('CKPT', 'bogus'), {}, "load_model: unknown dataset 'bogus'"),
    (('CKPT', 'cifar10'), {'input_layer': 'bogus'}, "load_model: unknown input_layer 'bogus'"),
    (('CKPT', 'cifar10'), {'input_layer': 1}, 'load_model: unknown input_layer 1'),
    (('CKPT', 'cifar10'), {'arch': 'bogus'}, "load_model: unknown arch 'bogus'"),
    (('CKPT', 'digits'), {'arch': 'resnet110'}, "load_model: arch='resnet110' takes 3x32x32 inputs but digits images "
                                                'are 1x28x28; leave arch out'),
    (('CKPT', 'digits'), {}, 'holds a resnet110, which takes 3x32x32 inputs but digits images are 1x28x28; give the '
                             'data set it was trained on'),
    (('CKPT', 'mnist'), {}, 'holds a resnet110, which takes 3x32x32 inputs but mnist images are 1x28x28'),
    (('CKPT', 'imagenet'), {}, 'holds a resnet110, which takes 3x32x32 inputs but imagenet images are 3x224x224'),
])
def test_load_model_refuses_what_does_not_fit_with_one_line(cohen_resnet110, args, kwargs, message):
    from checkpoint import load_model
    args = tuple(cohen_resnet110 if a == 'CKPT' else a for a in args)
    with pytest.raises(UsageError) as e:
        load_model(*args, **kwargs)
    assert message in str(e.value) and '\n' not in str(e.value)


def test_load_model_takes_a_cifar10_resnet110_where_the_command_line_does(cohen_resnet110):
    """SVHN's images are 3x32x32 like Cifar-10's, so the command line takes a ResNet-110 for it too."""
    import torch
    from checkpoint import check_fit, load_model
    model = load_model(cohen_resnet110, 'svhn')
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    check_fit('resnet110', 'svhn')


def test_the_fit_of_an_architecture_is_one_check_for_the_command_line_and_load_model():
    from checkpoint import check_fit
    from data import DATASETS
    from model import ARCHS
    for arch in ARCHS:
        for dataset in DATASETS:
            try:
                check_fit(arch, dataset)
                refused = None
            except UsageError as e:
                refused = str(e)
            expected = None if (arch, dataset) in {('lenet', 'digits'), ('lenet', 'mnist'), ('lenet', 'fashion_mnist'),
                                                   ('resnet110', 'cifar10'),
                                                   ('resnet110', 'svhn'), ('resnet50', 'cifar10'),
                                                   ('resnet50', 'svhn'), ('resnet50', 'imagenet')} else \
                f'--arch {arch} takes'
            assert (refused is None) == (expected is None) and (refused is None or refused.startswith(expected)), \
                (arch, dataset, refused)


def test_trainingcurves_draws_the_interval_over_the_images_around_each_certified_acr(tmp_path):
    import numpy as np
    from rs.compare import bootstrap_mean
    radii = np.tile([0.5, -1.0, 0.3, 0.7, 0.0, -1.0, 0.9, 0.2], 2)  # 16 images: enough for a bootstrap interval
    low, high = trainingcurves.acr_interval(radii, 0.95)
    assert (low, high) == bootstrap_mean(radii.clip(min=0.0), 0.95)[1:] and low < 0.325 < high
    assert trainingcurves.acr_interval(radii[:8], 0.95) is None  # 8 images: none, the point alone
    logs = [[{'epoch': 4, 'classification': 1.0}]]
    fig = trainingcurves.figure(['a'], logs, [{4: 0.325}], intervals=[{4: (low, high)}])
    panel = next(ax for ax in fig.axes if ax.get_title() == 'certified ACR (hard)')
    segments = [seg for c in panel.collections for seg in c.get_segments()]
    assert len(segments) == 1 and np.allclose(segments[0][:, 1], [low, high])


@pytest.mark.parametrize('out', ['', 'sub/', '.', '.x'])
def test_an_out_prefix_without_a_name_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, out):
    # its outputs would be hidden files (sub/.png, .md, ...) that nobody finds
    import compare
    demo = os.path.join(ROOT, 'reproduce', 'results', 'digits-0.25')
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'sub').mkdir()
    for command, inputs in ((plotcurves.main, [os.path.join(demo, 'macer.mat')]),
                            (compare.main, [os.path.join(demo, 'macer.json'), os.path.join(demo, 'gaussian.json')])):
        assert command([*inputs, '--out', out]) == 2
        err = capsys.readouterr().err
        assert 'names no file' in err and err.count('\n') == 1
    assert sorted(os.listdir(tmp_path)) == ['sub'] and os.listdir(tmp_path / 'sub') == []
