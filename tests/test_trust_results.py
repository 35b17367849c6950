"""Results you can trust: recomputation equals a fresh run or refuses, edited files are caught, no NaN
reaches a file, a recomputation never replaces a run's files, and every look at the statistics is recorded.

Every refusal is one line with exit status 2 and leaves the files as they were.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io as sio
import torch

import main
from conftest import ROOT, run_main, snapshot
from plumbing.errors import UsageError
from rs.recompute import recompute
from rs.results import parse_log, strict_json
from rs.runfiles import read_record, write_record, ResultFiles

MACER = os.path.join(ROOT, 'checkpoints', 'digits-macer-0.25.pth')
GAUSSIAN = os.path.join(ROOT, 'checkpoints', 'digits-gaussian-0.25.pth')
RECOMPUTE = os.path.join(ROOT, 'visualize', 'recompute.py')
# a run with certified and abstained images in both modes (images 500, 537, ..., 759; 611 abstains)
RUN = ['--task', 'test', '--dataset', 'digits', '--resume_ckpt', MACER, '--quiet', '--sigma', '0.5', '--N', '200',
       '--num_img', '8', '--skip', '37', '--name', '30']


def certify(*args):
    return main.main([str(a) for a in args])


def in_process(capsys, *args):
    """main.py in this process (no start-up cost): (exit status, stderr)."""
    capsys.readouterr()
    try:
        code = main.main([str(a) for a in args])
    except SystemExit as e:  # a flag's value refused by argparse
        code = e.code
    return subprocess.CompletedProcess(args, code, '', capsys.readouterr().err)


def recompute_in_process(capsys, *args):
    """visualize/recompute.py's main() in this process: (exit status, stdout, stderr)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('recompute_command', RECOMPUTE)
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    capsys.readouterr()
    try:
        code = command.main([str(a) for a in args])
    except SystemExit as e:  # a flag's value refused by argparse
        code = e.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def run_recompute(*args, **kwargs):
    return subprocess.run([sys.executable, RECOMPUTE, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          **kwargs)


def refused(r, *words):
    """A command that stopped with one line (exit 2) holding `words`."""
    assert r.returncode == 2 and r.stderr.count('\n') == 1, (r.returncode, r.stderr)
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def rows(path):
    return [r.result() for r in parse_log(open(path).read(), str(path))]


def stats_lines(folder, name='30'):
    return [json.loads(line) for line in (folder / f'{name}.stats.jsonl').read_text().splitlines()]


def write_stats(folder, entries, name='30'):
    (folder / f'{name}.stats.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in entries))


def edit_json(path, **changes):
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps({k: v for k, v in record.items() if v is not None}))


@pytest.fixture(scope='module')
def both_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp('both') / 'mat'
    assert certify(*RUN, '--matdir', folder) == 0
    return folder


@pytest.fixture
def run(both_run, tmp_path):
    """A fresh copy of the finished run, to edit."""
    shutil.copytree(both_run, tmp_path / 'mat')
    return tmp_path / 'mat'


# --- issue 18, A: early abstention replayed at the new alpha --------------------------------------------

EARLY = ['--task', 'test', '--dataset', 'digits', '--resume_ckpt', GAUSSIAN, '--quiet', '--sigma', '1.0', '--N', '1000',
         '--early_abstain', '40', '--mode', 'hard', '--seed', '0', '--name', 'r',
         # of the images 0, 10, ..., 990: 430 and 620 are two where the early test abstains at alpha 0.4
         # but not at 0.001, which a recomputation that kept every early abstention got wrong; 810 certifies
         '--start_img', '430', '--skip', '190', '--num_img', '3']


def test_a_recomputation_replays_the_early_test_and_equals_a_fresh_run_or_refuses(tmp_path):
    assert certify(*EARLY, '--matdir', tmp_path / 'a001') == 0
    assert certify(*EARLY, '--matdir', tmp_path / 'a4', '--alpha', '0.4') == 0
    # the early test's own statistics are kept where it did not abstain
    assert [e['hard']['early_test']['n'] for e in stats_lines(tmp_path / 'a001', 'r')] == [40, 40, 40]
    assert [bool(e['hard'].get('early')) for e in stats_lines(tmp_path / 'a4', 'r')] == [True, True, False]
    fresh = rows(tmp_path / 'a4' / 'r.hard.tsv')
    assert [r[2] for r in fresh] == [-1, -1, 2] and [r[2] for r in rows(tmp_path / 'a001' / 'r.hard.tsv')] == [-1, 8, 2]
    result = recompute(str(tmp_path / 'a001' / 'r.json'), alpha=0.4)
    assert [r.result() for r in result['rows']] == fresh
    assert np.array_equal(result['radii'], sio.loadmat(tmp_path / 'a4' / 'r.mat')['hard'][0])
    assert result['recomputed']['early_abstentions'] == 2 and result['recomputed']['early_abstentions_kept'] == 0
    # the other way there is nothing to recompute from: images 430 and 620 never drew their N samples
    r = run_recompute(tmp_path / 'a4' / 'r.json', '--alpha', '0.001', '--out', tmp_path / 'down')
    refused(r, 'image 430 cannot be recomputed at alpha 0.001', 'certify again with --alpha 0.001')
    assert not list(tmp_path.glob('down*'))
    # a run of version 1.0.0 kept no early-test statistics where the test let an image through: above the
    # run's alpha the test could have stopped them, so that is refused; at or below it, the test cannot
    old = tmp_path / 'old'
    shutil.copytree(tmp_path / 'a001', old)
    write_stats(old, [{**e, 'hard': {k: v for k, v in e['hard'].items() if k != 'early_test'}}
                      for e in stats_lines(old, 'r')], 'r')
    edit_json(old / 'r.json', sha256=None)
    with pytest.raises(UsageError, match='keeps no early-test statistics for image 430'):
        recompute(str(old / 'r.json'), alpha=0.4)
    assert [r.result() for r in recompute(str(old / 'r.json'), alpha=0.0005)['rows']] == \
        [r.result() for r in recompute(str(tmp_path / 'a001' / 'r.json'), alpha=0.0005)['rows']]


# --- issue 18, B: every recomputation recorded, and listed by the next ----------------------------------

def test_each_recomputation_lists_the_earlier_ones_and_what_they_cost(run):
    for alpha, bound, out in ((0.01, 'clopper-pearson', 'r1'), (0.05, 'clopper-pearson', 'r2'),
                              (0.01, 'bernstein', 'r3')):
        r = run_recompute(run / '30.json', '--alpha', alpha, '--bound', bound, '--out', run / out)
        assert r.returncode == 0, r.stderr
    third = json.loads((run / 'r3.json').read_text())['recomputed']
    assert [(e['alpha'], e['bound'], e['out']) for e in third['earlier']] == \
        [(0.01, 'clopper-pearson', str(run / 'r1')), (0.05, 'clopper-pearson', str(run / 'r2'))]
    # hard Clopper-Pearson at 0.001 (the run), 0.01, 0.05: nested, 0.05 in all; soft at 0.001; hard Bernstein 0.01
    assert third['effective_alpha'] == pytest.approx(0.05 + 0.001 + 0.01)
    assert 'weakened' in third['warning'] and 'after looking' in third['warning']
    assert 'hold with probability 1 - 0.061, not 1 - 0.01' in r.stdout
    assert json.loads((run / 'r1.json').read_text())['recomputed']['earlier'] == []
    history = [json.loads(line) for line in (run / '30.recomputations.jsonl').read_text().splitlines()]
    assert [h['out'] for h in history] == [str(run / o) for o in ('r1', 'r2', 'r3')]
    # the record is the run's: its digest still holds, a rerun of the run resumes, and the API records too
    assert certify(*RUN, '--matdir', run) == 0
    assert len(recompute(str(run / '30.json'), alpha=0.02)['recomputed']['earlier']) == 3
    assert (run / '30.recomputations.jsonl').read_text().count('\n') == 4


# --- issue 19, 1: --out never replaces a run's files -----------------------------------------------------

def test_out_never_replaces_the_files_of_a_run_and_names_a_file(run, tmp_path, capsys):
    other = ['--name', '31', '--num_img', '2']
    assert certify(*RUN, *other, '--matdir', run) == 0
    (run / 'notes.json').write_text('{"status": "complete", "identity": null}')  # a damaged run's JSON
    os.makedirs(tmp_path / 'elsewhere')
    before = snapshot(run)
    for out, words in ((run / '30', '30.mat, a file of the certification run 30'),
                       (run / '30.hard', '30.hard.tsv, a file of the certification run 30'),
                       (run / '31', 'run 31'), (run / '30.soft', '30.soft.tsv, a file of the certification run 30'),
                       (run / 'notes', 'a file of the certification run notes'),
                       ('', 'names no file'), (f'{tmp_path / "elsewhere"}/', 'names no file'),
                       (run / '.hidden', 'names no file')):
        refused(recompute_in_process(capsys, run / '30.json', '--alpha', '0.01', '--out', out), words)
    refused(run_recompute(run / '30.json', '--out', run / '30'), 'a file of the certification run 30')  # a real process
    assert snapshot(run) == before and os.listdir(tmp_path / 'elsewhere') == []
    # a JSON that is not a recomputation's is not replaced either; an earlier recomputation's is
    (tmp_path / 'elsewhere' / 'mine.json').write_text('{"plot": 1}\n')
    refused(recompute_in_process(capsys, run / '30.json', '--out', tmp_path / 'elsewhere' / 'mine'),
            'this tool did not write it')
    for alpha in ('0.01', '0.02'):
        assert recompute_in_process(capsys, run / '30.json', '--alpha', alpha, '--out',
                                    tmp_path / 'elsewhere' / 'r').returncode == 0
    assert json.loads((tmp_path / 'elsewhere' / 'r.json').read_text())['recomputed']['alpha'] == 0.02


# --- issue 19, 2: no NaN or infinity reaches a file -------------------------------------------------------

SOFT = ['--task', 'test', '--dataset', 'digits', '--quiet', '--sigma', '0.25', '--N', '200', '--num_img', '3',
        '--start_img', '17', '--mode', 'soft']


def no_non_finite(folder):
    for path in folder.iterdir():
        if path.suffix in ('.json', '.jsonl', '.tsv'):
            text = path.read_text()
            assert 'NaN' not in text and 'nan' not in text and 'Infinity' not in text, path
        if path.suffix == '.mat':
            for key in ('hard', 'soft'):
                if key in sio.loadmat(path):
                    assert np.isfinite(sio.loadmat(path)[key]).all()


def test_non_finite_scores_and_bounds_never_reach_a_file(run, tmp_path, capsys):
    r = run_main(*SOFT, '--resume_ckpt', MACER, '--beta', '1e38', '--matdir', tmp_path / 'beta')  # a real process
    refused(r, 'softmax(beta * outputs) on test image 17 are NaN', '--beta')
    assert not (tmp_path / 'beta' / '30.mat').exists() and rows(tmp_path / 'beta' / '30.soft.tsv') == []
    # finite logits near the largest float: beta 16 (the default) times them overflows just the same
    ckpt = torch.load(MACER, weights_only=True)
    ckpt['net']['fc2.weight'].zero_()
    ckpt['net']['fc2.bias'].copy_(torch.tensor([1e38] + [0.0] * 9))
    torch.save(ckpt, tmp_path / 'huge.pth')
    r = in_process(capsys, *SOFT, '--resume_ckpt', tmp_path / 'huge.pth', '--matdir', tmp_path / 'huge')
    refused(r, 'softmax(beta * outputs) on test image 17 are NaN')
    # an alpha whose bound overflows, or that says nothing (1/2 or more)
    for alpha, words in (('1e-320', 'the confidence bounds overflow'), ('0.5', 'strictly between 0 and 1/2')):
        r = in_process(capsys, *SOFT, '--resume_ckpt', MACER, '--alpha', alpha, '--matdir', tmp_path / 'alpha')
        refused(r, words)
    before = snapshot(run)
    refused(recompute_in_process(capsys, run / '30.json', '--alpha', '1e-320', '--mode', 'soft', '--out',
                                 tmp_path / 'x'), 'overflow')
    refused(recompute_in_process(capsys, run / '30.json', '--alpha', '0.999999', '--out', tmp_path / 'x'), '1/2')
    assert snapshot(run) == before and not list(tmp_path.glob('x*'))
    for folder in (tmp_path / 'beta', tmp_path / 'huge', run):
        no_non_finite(folder)
    # results are written as strict JSON: a NaN is named, and nothing is written
    with pytest.raises(UsageError, match=r'at summary\.soft\.1'):
        strict_json({'summary': {'soft': [0.5, float('nan')]}}, 'x')
    files = ResultFiles(str(tmp_path / 'strict'), 'n', ('hard',))
    os.makedirs(files.folder)
    with pytest.raises(UsageError, match='NaN or infinite at summary.acr'):
        write_record(files, {'summary': {'acr': float('inf')}})
    assert os.listdir(files.folder) == []


# --- issue 19, 3: edited statistics and logs ----------------------------------------------------------------

def test_the_statistics_are_checked_against_the_rows_the_selection_counts_and_the_digest(run):
    entries = stats_lines(run)
    k = 3  # image 611, label 6: abstains at the run's alpha (nA 115 of 200), certifies at 0.4
    assert rows(run / '30.hard.tsv')[k][:3] == (611, 6, -1) and entries[k]['hard']['nA'] == 115
    wrong = next(c for c in range(10) if c != entries[k]['hard']['cAHat'])
    for change, words in (({'cAHat': wrong}, f'cAHat {wrong} is not the most frequent of its selection counts'),
                          ({'cAHat': 99}, 'cAHat 99 is not the most frequent'),
                          ({'counts0': [0] * 9 + [99]}, 'sum to 99, not N0 = 100'),
                          ({'counts0': [0] * 8 + [100]}, 'not one per class'),
                          ({'nA': 201}, 'nA is 201, outside .0, n = 200.'),
                          ({'n': 150}, 'n is 150 .hard., not N = 200')):
        edited = [dict(e) for e in entries]
        edited[k] = {**entries[k], 'hard': {**entries[k]['hard'], **change}}
        write_stats(run, edited)
        with pytest.raises(UsageError, match=words):
            recompute(str(run / '30.json'), alpha=0.4)
    for change, words in (({'cAHat': 99}, r'cAHat 99 \(soft\) is not a class'),
                          ({'sum_sq': 150.0}, 'sum of squares 150.0 is not one'),
                          ({'sum': float('nan')}, 'not finite numbers')):
        edited = [dict(e) for e in entries]
        edited[k] = {**entries[k], 'soft': {**entries[k]['soft'], **change}}
        write_stats(run, edited)
        with pytest.raises(UsageError, match=words):
            recompute(str(run / '30.json'), mode='soft', alpha=0.4)
    # an edit that keeps every rule (nA 115 -> 120 still abstains at the run's alpha, and gives a larger
    # radius at 0.4): only the digest sees it, in a recomputation and in a rerun of the finished run alike
    edited = [dict(e) for e in entries]
    edited[k] = {**entries[k], 'hard': {**entries[k]['hard'], 'nA': 120}}
    write_stats(run, edited)
    refused(run_recompute(run / '30.json', '--alpha', '0.4', '--out', run / 'x'),
            '30.stats.jsonl is not the file the run wrote: its SHA-256 differs')
    before = snapshot(run)
    refused(run_main(*RUN, '--matdir', run), '30.stats.jsonl is not the file the run wrote')
    assert snapshot(run) == before
    # without the digest (a run finished by version 1.0.0) it passes: what the digest adds
    edit_json(run / '30.json', sha256=None)
    result = recompute(str(run / '30.json'), alpha=0.4)
    assert result['rows'][k].predict == 6 and 'recorded no digest' in result['recomputed']['integrity']


def test_a_row_without_its_statistics_line_is_refused_on_resume(run):
    # an unfinished run whose row was raised and its statistics line deleted
    entries = stats_lines(run)
    write_stats(run, entries[:3] + entries[4:])
    lines = (run / '30.hard.tsv').read_text().splitlines(keepends=True)
    fields = lines[4].split('\t')
    fields[2:5] = ['6', '0.9', '1']
    lines[4] = '\t'.join(fields)
    (run / '30.hard.tsv').write_text(''.join(lines))
    (run / '30.mat').unlink()
    edit_json(run / '30.json', status='running', sha256=None)
    refused(run_main(*RUN, '--matdir', run), 'image 611 has its rows but no line in', '30.stats.jsonl')


def test_labels_are_checked_against_the_statistics_and_a_run_without_digest_says_so(run):
    # a recomputation reads no data set: the TSV's labels must be those of the statistics
    original = (run / '30.hard.tsv').read_text()
    lines = original.splitlines(keepends=True)
    fields = lines[1].split('\t')
    assert fields[:3] == ['500', '9', '9']
    fields[1], fields[4] = '3', '0'  # another label, with `correct` to match
    lines[1] = '\t'.join(fields)
    (run / '30.hard.tsv').write_text(''.join(lines))
    with pytest.raises(UsageError, match='the label 9 of its statistics is not the label 3 of its row in the hard log'):
        recompute(str(run / '30.json'))
    (run / '30.hard.tsv').write_text(original)
    made = recompute(str(run / '30.json'))['recomputed']
    assert 'not the digits test set' in made['labels'] and 'SHA-256' in made['integrity']
    # a complete run of version 1.0.0 (no digest) resumes with its consistency checks, and says so
    edit_json(run / '30.json', sha256=None)
    r = run_main(*RUN, '--matdir', run)
    assert r.returncode == 0 and 'records no digest of its logs: they are checked for consistency only' in r.stderr


# --- issue 19, 6: one set of files, whatever runs at the same time ----------------------------------------

SLOW_WRITER = '''
import os, runpy, sys, time
from plumbing import outputs
flag, swap = sys.argv[1], outputs.OutputSet._swap
def held(self, pairs):  # the outputs are complete, the set's lock is held: wait before renaming them
    open(flag + '.holding', 'w').close()
    while not os.path.exists(flag + '.go'):
        time.sleep(0.01)
    return swap(self, pairs)
outputs.OutputSet._swap = held
sys.argv = [sys.argv[2]] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def consistent_outputs(prefix):
    """The three files of one recomputation, all made together (never one from another command)."""
    made = json.loads(open(f'{prefix}.json').read())['recomputed']
    again = recompute(made['from'], alpha=made['alpha'], mode=made['mode'])
    assert rows(f'{prefix}.tsv') == [r.result() for r in again['rows']]
    assert np.array_equal(sio.loadmat(f'{prefix}.mat')[made['mode']][0], again['radii'])
    return made


def test_two_recomputations_into_one_out_never_mix(run, tmp_path, monkeypatch):
    other = tmp_path / 'other'
    assert certify(*RUN, '--num_img', '3', '--seed', '1', '--matdir', other) == 0
    out, flag = tmp_path / 'out' / 'r', tmp_path / 'flag'
    popen = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    slow = subprocess.Popen([sys.executable, '-c', SLOW_WRITER, str(flag), RECOMPUTE, str(run / '30.json'),
                             '--alpha', '0.01', '--out', str(out)], **popen)
    waiting = []
    try:
        deadline = time.time() + 120
        while not os.path.exists(f'{flag}.holding') and time.time() < deadline and slow.poll() is None:
            time.sleep(0.02)
        assert os.path.exists(f'{flag}.holding'), slow.communicate()
        # meanwhile: another run's recomputation into the same --out (it waits for the set's lock), and one of
        # the same run (it waits for the run's record of recomputations)
        for record, alpha in ((other / '30.json', '0.02'), (run / '30.json', '0.03')):
            waiting.append(subprocess.Popen([sys.executable, RECOMPUTE, str(record), '--alpha', alpha, '--out',
                                             str(out)], **popen))
        time.sleep(1.5)
        assert all(p.poll() is None for p in waiting)
        assert not [p for p in os.listdir(tmp_path / 'out') if not p.startswith('.')]  # nothing renamed yet
    finally:
        open(f'{flag}.go', 'w').close()
        slow.communicate(timeout=120)
        for p in waiting:
            p.communicate(timeout=120)
    assert slow.returncode == 0
    for p in waiting:  # each waited and wrote its whole set after the first, or was refused with one line
        assert p.returncode == 0 or (p.returncode == 2 and p.stderr.count('\n') == 1), p.stderr
    assert [json.loads(line)['alpha'] for line in (run / '30.recomputations.jsonl').read_text().splitlines()] == \
        [0.01, 0.03]  # the second of the run saw the first
    consistent_outputs(str(out))
    # a failure between two renames puts every file back as it was, and the message says so
    before = snapshot(tmp_path / 'out')
    entries = (run / '30.recomputations.jsonl').read_text()
    from plumbing import outputs
    replace, calls = os.replace, []

    def failing(src, dst):
        if str(dst).endswith('.macer-outputs'):
            return replace(src, dst)  # the record of the set's outputs
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, 'No space left on device')
        return replace(src, dst)
    monkeypatch.setattr(outputs.os, 'replace', failing)
    with pytest.raises(UsageError, match='every file of the set is as it was before'):
        recompute(str(run / '30.json'), alpha=0.04, out=str(out))
    monkeypatch.undo()
    assert snapshot(tmp_path / 'out') == before
    assert (run / '30.recomputations.jsonl').read_text() == entries  # a recomputation not written is not recorded


# --- issue 19, 7: a batch larger than N, or than memory ----------------------------------------------------

def test_the_batch_is_sized_by_n_and_a_batch_that_cannot_fit_is_one_line(tmp_path):
    small = ['--task', 'test', '--dataset', 'digits', '--resume_ckpt', MACER, '--quiet', '--N', '150', '--num_img', '2',
             '--mode', 'hard']
    assert certify(*small, '--certify_batch', 10 ** 12, '--matdir', tmp_path / 'huge') == 0
    assert certify(*small, '--certify_batch', 150, '--matdir', tmp_path / 'exact') == 0
    assert rows(tmp_path / 'huge' / '30.hard.tsv') == rows(tmp_path / 'exact' / '30.hard.tsv')
    r = run_main(*small, '--N', 10 ** 12, '--certify_batch', 10 ** 12, '--matdir', tmp_path / 'nofit')
    refused(r, '--certify_batch 1000000000000: a batch of 1000000000000 noisy copies',
            'choose a smaller --certify_batch')
    # past the memory check (unknown memory), the allocator's failure is the same one line
    from rs.core import BatchTooLarge, Smooth
    from model import LeNet
    smooth = Smooth(LeNet().eval(), 10, 0.25, 'cpu')
    smooth.memory = None
    with pytest.raises(BatchTooLarge, match='does not fit in the memory of cpu'):
        smooth.tally(torch.zeros(1, 28, 28), 10 ** 13, 10 ** 13)


# --- issue 19, 9: the right file blamed, the run's mode, every machine kept, old identities ----------------

def test_recompute_names_the_missing_file_and_defaults_to_the_runs_mode(run, tmp_path):
    before = (run / '30.hard.tsv').read_text()
    lines = before.splitlines(keepends=True)
    (run / '30.hard.tsv').write_text(''.join(lines[:4] + lines[5:]))
    with pytest.raises(UsageError, match=r'30.hard.tsv has no row for image 611'):
        recompute(str(run / '30.json'))
    (run / '30.hard.tsv').write_text(before)
    (run / '30.soft.tsv').unlink()
    with pytest.raises(UsageError, match=r'30.soft.tsv does not exist'):
        recompute(str(run / '30.json'), mode='soft')
    # a soft-only run is recomputed in soft mode without being told
    assert certify(*RUN, '--mode', 'soft', '--num_img', '2', '--matdir', tmp_path / 'soft') == 0
    r = run_recompute(tmp_path / 'soft' / '30.json', '--alpha', '0.01', '--out', tmp_path / 'soft-r')
    assert r.returncode == 0 and 'soft mode, alpha 0.01' in r.stdout, r.stderr
    assert list(sio.loadmat(tmp_path / 'soft-r.mat')) [-1] == 'soft'


def test_a_run_keeps_every_environment_it_was_computed_on(run, tmp_path):
    # as if the first half was certified elsewhere: the JSON of the interrupted run says so
    cut = tmp_path / 'cut'
    shutil.copytree(run, cut)
    record = json.loads((cut / '30.json').read_text())
    elsewhere = {**record['environment'], 'host': 'elsewhere', 'cpu': 'Another CPU'}
    for mode in ('hard', 'soft'):
        path = cut / f'30.{mode}.tsv'
        path.write_text(''.join(path.read_text().splitlines(keepends=True)[:5]))
    (cut / '30.mat').unlink()
    edit_json(cut / '30.json', status='running', sha256=None, environment=elsewhere, environments=[elsewhere])
    assert certify(*RUN, '--matdir', cut) == 0
    environments = json.loads((cut / '30.json').read_text())['environments']
    assert [e['host'] for e in environments] == ['elsewhere', record['environment']['host']]
    # a rerun of the finished run that computes nothing adds nothing
    assert certify(*RUN, '--matdir', cut) == 0
    assert json.loads((cut / '30.json').read_text())['environments'] == environments


def test_a_hard_mode_identity_with_beta_still_resumes(tmp_path):
    hard = ['--task', 'test', '--dataset', 'digits', '--resume_ckpt', MACER, '--quiet', '--N', '100', '--num_img', '3',
            '--mode', 'hard', '--matdir', tmp_path]
    assert certify(*hard) == 0
    record = json.loads((tmp_path / '30.json').read_text())
    for mode in ('hard',):
        path = tmp_path / f'30.{mode}.tsv'
        path.write_text(''.join(path.read_text().splitlines(keepends=True)[:2]))
    edit_json(tmp_path / '30.json', status='running', sha256=None, identity={**record['identity'], 'beta': 16.0})
    assert read_record(ResultFiles(str(tmp_path), 30, ('hard',)))['identity'] == \
        {k: v for k, v in record['identity'].items() if k != 'beta'}
    assert certify(*hard) == 0
    assert len(rows(tmp_path / '30.hard.tsv')) == 3
