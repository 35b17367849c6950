"""visualize/leaderboard.py: the published table and a run placed in it, against an independent reading of the
published logs; its refusals."""
import csv
import gzip
import io
import json
import os
import shutil

import numpy as np
import pytest

from conftest import ROOT, certify_digits

import sys
sys.path.insert(0, os.path.join(ROOT, 'visualize'))
import leaderboard  # noqa: E402

CATRS = os.path.join(ROOT, 'reproduce', 'published', 'catrs')


def _published(name):
    """A published log read with the standard library alone: {idx: (label, predict, radius, correct)}."""
    with gzip.open(os.path.join(CATRS, name), 'rt') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    return {int(r['idx']): (int(r['label']), int(r['predict']), float(r['radius']), int(r['correct'])) for r in rows}


def _independent(rows, images, radius):
    hits = [1 for i in images if rows[i][3] == 1 and rows[i][1] != -1 and rows[i][2] >= radius]
    return len(hits) / len(images)


def _board_csv(prefix):
    with open(prefix + '.csv') as f:
        return list(csv.DictReader(f))


def test_published_table_matches_an_independent_reading(tmp_path):
    out = str(tmp_path / 'fm')
    assert leaderboard.main(['--dataset', 'fashion_mnist', '--sigma', '0.25', '--out', out]) == 0
    rows = _board_csv(out)
    for name, label in (('fashion_mnist-gaussian-0.25.tsv.gz', 'Gaussian'), ('fashion_mnist-catrs-0.25.tsv.gz',
                                                                              'CAT-RS')):
        log = _published(name)
        for protocol, images in (('macer', range(500, 1000)), ('cohen', range(0, 10000, 20)), ('full', range(10000))):
            images = list(images)
            for r in (0.0, 0.25, 0.5, 0.75):
                got = next(float(x['value']) for x in rows if x['protocol'] == protocol and x['model'] == label and
                           x['statistic'] == 'certified accuracy' and float(x['radius']) == r)
                assert got == pytest.approx(_independent(log, images, r), abs=1e-12)
            acr = np.mean([log[i][2] if log[i][3] == 1 and log[i][1] != -1 else 0.0 for i in images])
            got = next(float(x['value']) for x in rows if x['protocol'] == protocol and x['model'] == label and
                       x['statistic'] == 'ACR')
            assert got == pytest.approx(acr, abs=1e-12)
    models = {x['model'] for x in rows}
    assert models == {'Gaussian', 'SmoothAdv', 'MACER', 'Stability', 'Consistency', 'SmoothMix', 'CAT-RS'}
    assert all(os.path.isfile(out + ext) for ext in leaderboard.OUTPUTS)


def _log_from_published(path, name, images, flip=()):
    """A TSV log of another tool on `images`: the published Gaussian rows, with the images of `flip` made wrong."""
    log = _published(name)
    with open(path, 'w') as f:
        f.write('idx\tlabel\tpredict\tradius\tcorrect\ttime\n')
        for i in images:
            label, predict, radius, correct = log[i]
            if i in flip:
                predict, correct = (label + 1) % 10, 0
            f.write(f'{i}\t{label}\t{predict}\t{radius}\t{correct}\t0.1\n')


def test_a_run_is_compared_image_by_image_with_each_published_model(tmp_path):
    run = tmp_path / 'mine.tsv'
    flip = set(range(500, 520))
    _log_from_published(run, 'fashion_mnist-gaussian-0.25.tsv.gz', range(500, 1000), flip)
    out = str(tmp_path / 'board')
    assert leaderboard.main([str(run), '--dataset', 'fashion_mnist', '--sigma', '0.25', '--out', out]) == 0
    text = open(out + '.md').read()
    assert 'MACER\'s table' in text and 'every 20th' not in text  # the run holds images 500..999 only
    assert 'this run vs Gaussian' in text
    # the paired difference at r = 0 against the published Gaussian: exactly the flipped images that were right
    log = _published('fashion_mnist-gaussian-0.25.tsv.gz')
    lost = sum(1 for i in flip if log[i][3] == 1 and log[i][1] != -1 and log[i][2] >= 0.0)
    row = next(line for line in text.splitlines() if line.startswith('| this run vs Gaussian | r = 0.00'))
    assert f'| 0 / {lost} |' in row


def test_refusals(tmp_path, capsys):
    out = str(tmp_path / 'x')
    # a data set no published model is of
    run = certify_digits(tmp_path / 'mat', 'digits', num_img=3)
    assert leaderboard.main([run, '--out', out]) != 0
    assert 'no published model of digits' in capsys.readouterr().err
    # a sigma with no published model
    assert leaderboard.main(['--dataset', 'fashion_mnist', '--sigma', '0.3', '--out', out]) != 0
    assert 'no published model of fashion_mnist at sigma 0.3' in capsys.readouterr().err
    # neither a run nor --dataset and --sigma
    assert leaderboard.main(['--out', out]) != 0
    assert 'give a run, or --dataset and --sigma' in capsys.readouterr().err
    # a log without a record needs --dataset and --sigma
    log = tmp_path / 'mine.tsv'
    _log_from_published(log, 'fashion_mnist-gaussian-0.25.tsv.gz', range(500, 1000))
    assert leaderboard.main([str(log), '--out', out]) != 0
    assert 'give --dataset and --sigma' in capsys.readouterr().err
    # images beyond the test set
    with open(log, 'a') as f:
        f.write('12000\t1\t1\t0.5\t1\t0.1\n')
    assert leaderboard.main([str(log), '--dataset', 'fashion_mnist', '--sigma', '0.25', '--out', out]) != 0
    assert 'test set has 10000 images' in capsys.readouterr().err
    assert not any(os.path.exists(out + ext) for ext in leaderboard.OUTPUTS)


def test_a_run_of_other_settings_and_an_edited_published_log_are_refused(tmp_path):
    from plumbing.errors import UsageError
    from rs.runs import Run
    folder = tmp_path / 'published'
    folder.mkdir()
    name = 'fashion_mnist-gaussian-0.25.tsv.gz'
    shutil.copy(os.path.join(CATRS, name), folder / name)
    manifest = json.load(open(os.path.join(CATRS, 'manifest.json')))
    manifest['logs'] = [e for e in manifest['logs'] if e['file'] == name]
    (folder / 'manifest.json').write_text(json.dumps(manifest))
    idx = np.arange(500, 1000)
    radii = np.full(idx.size, 0.3)
    other_n = Run('mine.json', 'hard', radii, idx, None, sigma=0.25, N=1000, N0=100, alpha=0.001,
                  bound_name='clopper-pearson', dataset='fashion_mnist', checked='digests')
    with pytest.raises(UsageError, match='at N 1000 and .* at N 100000'):
        leaderboard.build(other_n, 'mine.json', 'this run', 'fashion_mnist', 0.25, [0.0, 0.25], 0.95, ['macer'],
                          False, folders=[str(folder)])
    # the same run with --other_settings is compared, and the table says which settings differ
    texts, _, _, _ = leaderboard.build(other_n, 'mine.json', 'this run', 'fashion_mnist', 0.25, [0.0, 0.25], 0.95,
                                       ['macer'], True, folders=[str(folder)])
    assert 'N differ' in texts['.md']
    # an edited published log is refused, naming it
    raw = gzip.decompress((folder / name).read_bytes()).decode()
    lines = raw.splitlines()
    cells = lines[600].split('\t')
    cells[3] = '0.9'  # a larger radius
    lines[600] = '\t'.join(cells)
    (folder / name).write_bytes(gzip.compress(('\n'.join(lines) + '\n').encode()))
    with pytest.raises(UsageError, match=f'{name} is not the published log'):
        leaderboard.build(None, None, 'this run', 'fashion_mnist', 0.25, [0.0], 0.95, ['macer'], False,
                          folders=[str(folder)])


def test_the_figure_of_nine_models_stays_legible():
    from compare import text_overlaps
    texts, done, _, grid = leaderboard.build(None, None, 'this run', 'cifar10', 0.25, list(leaderboard.GRID), 0.95,
                                             list(leaderboard.PROTOCOLS), False)
    assert len({label for _, _, labels, _, _ in done for label in labels}) == 9  # seven methods, Cohen's, Salman's
    fig = leaderboard.figure(done, grid)
    assert text_overlaps(fig) == []
    # a model looks the same in every panel
    colours = {}
    for ax in fig.axes:
        for bars in ax.containers:
            line = bars.lines[0]
            colours.setdefault(bars.get_label(), set()).add((str(line.get_color()), line.get_marker()))
    assert all(len(v) == 1 for v in colours.values()) and len(set.union(*colours.values())) == 9
