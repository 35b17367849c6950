"""Comparing models over the test images: intervals, paired tests and `visualize/compare.py`.

The statistics are checked against scipy and statsmodels, the intervals' coverage by simulation on a
population whose certified accuracy is known, and the command on the shipped published logs, the
demo's results and a fresh certification."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import bootstrap as scipy_bootstrap
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from conftest import ROOT, certify_digits, run_without_torch
from rs.compare import (bootstrap_mean, clopper_pearson, compare_pair, coverage, holm, mcnemar_exact,
                        newcombe_paired)
from rs.results import read_tsv
from rs.runs import label_lower_bound, read_run
from rs.stats import acr, lower_confidence_bound

sys.path.insert(0, os.path.join(ROOT, 'visualize'))
import compare  # noqa: E402

LOGS = os.path.join(ROOT, 'reproduce', 'published')
DEMO = os.path.join(ROOT, 'reproduce', 'results', 'digits-0.25')


def run(*args):
    return compare.main([str(a) for a in args])


@pytest.mark.parametrize('k, n, level', [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.95), (250, 500, 0.95),
                                         (497, 500, 0.9), (1, 100, 0.99)])
def test_clopper_pearson_equals_statsmodels(k, n, level):
    assert np.allclose(clopper_pearson(k, n, level), proportion_confint(k, n, alpha=1 - level, method='beta'),
                       rtol=0, atol=1e-12)


@pytest.mark.parametrize('a_only, b_only', [(0, 0), (0, 5), (26, 60), (39, 33), (7, 1), (120, 95)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images(a_only, b_only):
    p = mcnemar_exact(a_only, b_only)
    if a_only + b_only:
        assert p == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue, rel=1e-12)
    table = [[40, a_only], [b_only, 30]]  # the concordant cells do not enter the exact test
    assert p == pytest.approx(statsmodels_mcnemar(table, exact=True).pvalue, rel=1e-9)


def test_a_pairs_p_value_is_the_binomial_test_on_its_own_discordant_images():
    a, b = (read_run(os.path.join(LOGS, f'{who}-cifar10-0.25.tsv')) for who in ('cohen', 'salman'))
    for row in compare_pair(a, b):
        if row['statistic'] != 'certified accuracy':
            continue
        r = row['radius']
        only_a, only_b = int(np.sum((a.radii >= r) & (b.radii < r))), int(np.sum((a.radii < r) & (b.radii >= r)))
        assert (row['a_only'], row['b_only']) == (only_a, only_b)
        assert row['p'] == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0)
        assert row['difference'][0] == pytest.approx(np.mean(a.radii >= r) - np.mean(b.radii >= r))


@pytest.mark.parametrize('both, a_only, b_only, neither', [(4, 2, 6, 3), (10, 5, 10, 5), (0, 3, 0, 4), (6, 3, 2, 1)])
def test_newcombes_paired_interval_is_his_independent_one_when_the_pairs_are_uncorrelated(both, a_only, b_only,
                                                                                           neither):
    assert both * neither == a_only * b_only  # phi = 0: the paired table carries no correlation
    n = both + a_only + b_only + neither
    d, low, high = newcombe_paired(both, a_only, b_only, neither)
    assert d == pytest.approx((a_only - b_only) / n)
    assert (low, high) == pytest.approx(confint_proportions_2indep(both + a_only, n, both + b_only, n,
                                                                   method='newcomb', compare='diff'), abs=1e-12)


def test_newcombes_paired_interval_is_narrower_when_pairs_agree_and_mirrors_when_swapped():
    d, low, high = newcombe_paired(80, 5, 2, 13)
    _, low_indep, high_indep = newcombe_paired(*independent_table(85, 82, 100))
    assert low < d < high and high - low < high_indep - low_indep  # positive correlation: a tighter difference
    assert newcombe_paired(80, 2, 5, 13) == pytest.approx((-d, -high, -low))
    d, low, high = newcombe_paired(0, 0, 0, 10)  # neither certifies any of 10 images: no difference, but no certainty
    # no discordant image: +-the exact upper bound on the share of discordant images, never zero width (issue 27)
    assert d == 0 and low == pytest.approx(-high) and high == pytest.approx(1 - 0.025 ** (1 / 10))


def independent_table(ka, kb, n):
    """A 2 x 2 table with margins ka, kb and (about) no correlation."""
    both = round(ka * kb / n)
    return both, ka - both, kb - both, n - ka - kb + both


def test_holm_equals_statsmodels():
    p = [0.01, 0.04, 0.03, 0.5, 0.001, 0.04]
    assert np.allclose(holm(p), multipletests(p, method='holm')[1])
    assert holm([]).size == 0


def test_the_bootstrap_is_deterministic_and_agrees_with_scipys_bca():
    radii = np.clip(read_run(os.path.join(LOGS, 'salman-cifar10-0.25.tsv')).radii, 0, None)
    first = bootstrap_mean(radii)
    assert bootstrap_mean(radii) == first  # a fixed seed: the same files give the same intervals, bit for bit
    assert bootstrap_mean(radii, seed=1) != first
    assert first[0] == pytest.approx(radii.mean())
    reference = scipy_bootstrap((radii,), np.mean, method='BCa', n_resamples=4000, random_state=0).confidence_interval
    width = first[2] - first[1]
    # the two differ only by Monte Carlo error (their resamples differ): a few % of the width
    assert abs(first[1] - reference.low) < 0.08 * width and abs(first[2] - reference.high) < 0.08 * width
    # every value the same: no interval pretends to be one (issue 27)
    same = bootstrap_mean(np.full(7, 0.3))
    assert same == (pytest.approx(0.3), None, None) and 'every one of the 7 images has the value 0.3' in same.why


def known_population(size=4000):
    """Two models on a population of images whose certified accuracies are known in closed form.

    A: the lowest 20 % of images (in a latent difficulty u) wrong, the others certified at radius (u - 0.2) / 0.8,
    uniform on [0, 1): certified accuracy 0.8 (1 - r), ACR 0.4. B: wrong below 0.3, radius 0.9 (u - 0.3) / 0.7:
    accuracy 0.7 (1 - r / 0.9), ACR 0.315, on the same images with u shuffled within blocks of 40 (paired, but
    not perfectly)."""
    u = (np.arange(size) + 0.5) / size
    rng = np.random.default_rng(11)
    ub = np.concatenate([rng.permutation(block) for block in u.reshape(-1, 40)])
    a = np.where(u < 0.2, -1.0, (u - 0.2) / 0.8)
    b = np.where(ub < 0.3, -1.0, 0.9 * (ub - 0.3) / 0.7)
    return a, b


def test_each_interval_covers_at_its_level_in_a_simulation_with_known_certified_accuracy():
    a, b = known_population()
    for r in (0.0, 0.25, 0.5):
        assert np.mean(a >= r) == pytest.approx(0.8 * (1 - r), abs=1e-3)
        assert np.mean(b >= r) == pytest.approx(0.7 * (1 - r / 0.9), abs=1e-3)
    assert np.clip(a, 0, None).mean() == pytest.approx(0.4, abs=1e-3)
    measured = coverage(a, b, images=150, replications=300, radii=(0.0, 0.25, 0.5), level=0.95, seed=0, resamples=600)
    # 300 replications measure a coverage of 0.95 to about +-0.013 (one standard error); Clopper-Pearson, the
    # exact paired difference and the betting interval are conservative by construction; the seed is fixed, so
    # this never flakes
    for kind in ('accuracy', 'difference', 'acr difference'):
        assert 0.95 - 0.026 <= measured[kind] <= 1.0, (kind, measured)
    for kind in ('acr', 'newcombe'):
        assert 0.92 <= measured[kind] <= 0.98, (kind, measured)
    for kind in ('null difference', 'null mcnemar', 'null acr difference', 'null sign-flip'):
        assert measured[kind] <= 0.05 + 0.026, (kind, measured)
    at_90 = coverage(a, b, images=150, replications=300, radii=(0.25,), level=0.9, seed=1, resamples=600)
    for kind in ('acr', 'newcombe'):
        assert 0.86 <= at_90[kind] <= 0.94, (kind, at_90)
    for kind in ('difference', 'acr difference'):
        assert 0.9 - 0.035 <= at_90[kind] <= 1.0, (kind, at_90)


def test_label_bound_and_noise_accuracy_of_the_demo_follow_from_its_statistics():
    run = read_run(os.path.join(DEMO, 'macer.json'))
    lines = [json.loads(line) for line in open(os.path.join(DEMO, 'macer.stats.jsonl'))]
    by_idx = {e['idx']: e for e in lines}
    for k, i in enumerate(run.idx):
        e = by_idx[int(i)]
        h = e['hard']
        if h['cAHat'] == e['label']:
            assert run.noise[k] == h['nA'] / h['n']
            assert run.bound[k] == lower_confidence_bound(h['nA'], h['n'], 0.001)
        else:
            assert run.noise[k] == h['counts0'][e['label']] / 100 and run.bound[k] == 0.0
    # certified correct exactly where the bound on the label's probability reaches 1/2
    assert np.array_equal(run.radii >= 0, run.bound >= 0.5)
    assert label_lower_bound([1, 2], [1, 3], [90, 90], [100, 100], 0.001)[1] == 0.0


def test_cohen_and_salman_compared_on_their_shared_images(tmp_path, capsys):
    files = [os.path.join(LOGS, f'{who}-cifar10-0.25.tsv') for who in ('cohen', 'salman')]
    assert run(*files, '--labels', 'Cohen', 'Salman', '--out', tmp_path / 'c') == 0
    md = (tmp_path / 'c.md').read_text()
    assert md.startswith('Runs compared on the same 500 test images (0, 20, ..., 9980), hard certificates.')
    assert '| Cohen vs Salman | r = 0.25 | 0.60 [0.56, 0.64] | 0.67 [0.62, 0.71] | -0.07 [' in md
    assert 'not the certificates\' alpha' in md and 'Unchecked' not in md  # the manifest gives their settings
    rows = [line.split(',') for line in (tmp_path / 'c.csv').read_text().splitlines()]
    header, rows = rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]
    assert header[:4] == ['a', 'b', 'statistic', 'radius']
    at = {r['radius']: r for r in rows if r['statistic'] == 'certified accuracy'}
    assert set(at) == {'0.0', '0.25', '0.5', '0.75'}  # at sigma 0.25 no image reaches 1.00: left out
    assert (int(at['0.25']['only_a']), int(at['0.25']['only_b'])) == (26, 60)
    assert float(at['0.25']['p']) == pytest.approx(binomtest(26, 86, 0.5).pvalue)
    p = [float(r['p']) for r in at.values()]
    assert [float(r['p_holm']) for r in at.values()] == pytest.approx(list(multipletests(p, method='holm')[1]))
    acr_row = next(r for r in rows if r['statistic'] == 'ACR')
    assert float(acr_row['a_value']) == pytest.approx(acr(read_run(files[0]).radii))
    assert '| Cohen | published | 0.25 | 100 | 100000 | 0.001 | clopper-pearson | hard | 0.429 [' in md
    assert float(acr_row['difference_high']) < 0  # Salman's ACR is higher, beyond the images' noise
    for ext in compare.OUTPUTS:
        assert (tmp_path / f'c{ext}').stat().st_size > 0
    assert (tmp_path / 'c.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_demos_three_models_compared(tmp_path, capsys):
    files = [os.path.join(DEMO, f'{m}.json') for m in ('macer', 'gaussian', 'smoothadv')]
    assert run(*files, '--labels', 'MACER', 'Gaussian', 'SmoothAdv', '--out', tmp_path / 'd') == 0
    md = (tmp_path / 'd.md').read_text()
    assert '| MACER | consistency | 0.25 | 100 | 10000 | 0.001 | clopper-pearson | hard | 0.749 [' in md
    assert '| MACER vs Gaussian | r = 0.25 | 0.97 [0.91, 0.99] | 0.95 [0.89, 0.98] | +0.02 [' in md
    # MACER against each other (its reference): 2 pairs x (4 radii (1.00 and up: none certified), ACR, noise)
    assert 'adjusted over the 12 p-values of this table' in md and 'Gaussian vs SmoothAdv' not in md
    summary = json.load(open(files[0]))['summary']['hard']
    rows = [dict(zip(*[line.split(',') for line in [(tmp_path / 'd.csv').read_text().splitlines()[0], line]]))
            for line in (tmp_path / 'd.csv').read_text().splitlines()[1:]]
    first = [r for r in rows if r['a'] == 'MACER' and r['b'] == 'Gaussian']
    assert [float(r['a_value']) for r in first if r['statistic'] == 'certified accuracy'] == summary['accuracy'][:4]
    assert float(next(r for r in first if r['statistic'] == 'ACR')['a_value']) == pytest.approx(summary['acr'])
    assert any(r['statistic'] == 'accuracy under noise' for r in first)
    # the soft certificates of the same runs
    assert run(*files, '--mode', 'soft', '--out', tmp_path / 's') == 0
    assert '| macer.json | consistency | 0.25 | 100 | 10000 | 0.001 | bernstein | soft | 0.686 [' in (tmp_path / 's.md').read_text()


def test_a_fresh_certification_is_compared_with_the_shipped_ones_on_the_images_they_share(tmp_path):
    import main
    assert main.main(['--task', 'test', '--dataset', 'digits', '--sigma', '0.25', '--start_img', '0', '--num_img', '12',
                      '--skip', '20', '--N0', '50', '--N', '200', '--certify_batch', '250', '--mode', 'hard',
                      '--resume_ckpt', os.path.join(ROOT, 'checkpoints', 'digits-macer-0.25.pth'), '--matdir',
                      str(tmp_path / 'mat'), '--name', 'fresh', '--quiet']) == 0
    mat = tmp_path / 'mat'
    shipped = os.path.join(DEMO, 'gaussian.json')
    # images 0, 20, ..., 220 against 0, 10, ..., 990: refused without --shared
    assert run(mat / 'fresh.json', shipped, '--out', tmp_path / 'f') == 2
    assert run(mat / 'fresh.json', shipped, '--shared', '--out', tmp_path / 'f') == 2  # N0 50, N 200: other settings
    assert run(mat / 'fresh.json', shipped, '--shared', '--other_settings', '--out', tmp_path / 'f') == 0
    md = (tmp_path / 'f.md').read_text()
    assert 'Runs compared on the same 12 test images (0, 20, ..., 220), hard certificates.' in md
    assert 'every run certified (--shared): fresh.json 12, gaussian.json 100.' in md
    assert '| fresh.json | digests | 0.25 | 50 | 200 | 0.001 |' in md and '| gaussian.json | consistency | 0.25 | 100 | 10000 |' in md
    assert 'Unchecked' not in md and 'N0, N differ' in md
    # the same run read from its JSON, its TSV log and its .mat: the same radii, and one run (issue 26, item 28)
    read = [read_run(str(mat / f)) for f in ('fresh.json', 'fresh.hard.tsv', 'fresh.mat')]
    assert all(np.array_equal(r.radii, read[0].radii) and r.key == read[0].key for r in read)
    for other in ('fresh.hard.tsv', 'fresh.mat'):
        assert run(mat / 'fresh.json', mat / other, '--out', tmp_path / 'g') == 2


def test_runs_on_other_images_are_refused_naming_the_first_difference_or_compared_on_the_shared(tmp_path, capsys):
    rows = read_tsv(os.path.join(LOGS, 'cohen-cifar10-0.25.tsv'))
    write_log(tmp_path / 'a.tsv', rows, range(0, 400))
    write_log(tmp_path / 'b.tsv', rows, range(10, 500))
    assert run(tmp_path / 'a.tsv', tmp_path / 'b.tsv', '--out', tmp_path / 'o') == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'certified other images: image 0 is in' in err and '390 in common' in err
    assert not list(tmp_path.glob('o.*'))
    assert run(tmp_path / 'a.tsv', tmp_path / 'b.tsv', '--shared', '--out', tmp_path / 'o') == 0
    md = (tmp_path / 'o.md').read_text()
    assert 'Runs compared on the same 390 test images (200, 220, ..., 7980), hard certificates.' in md
    assert 'compared on the 390 images every run certified (--shared): a.tsv 400, b.tsv 490.' in md


def write_log(path, rows, picks, label_shift=0):
    with open(path, 'w') as f:
        f.write('idx\tlabel\tpredict\tradius\tcorrect\ttime\n')
        for k in picks:
            # a shifted label shifts the prediction with it (an abstention stays one): the row stays consistent
            predict = rows['predict'][k] + (label_shift if rows['predict'][k] >= 0 else 0)
            f.write(f'{rows["idx"][k]}\t{rows["label"][k] + label_shift}\t{predict}\t{rows["radius"][k]}\t'
                    f'{rows["correct"][k]}\t0:00:01\n')


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    rows = read_tsv(os.path.join(LOGS, 'cohen-cifar10-0.25.tsv'))
    write_log(tmp_path / 'a.tsv', rows, range(0, 50))
    write_log(tmp_path / 'dup.tsv', rows, list(range(0, 30)) + [7] + list(range(30, 50)))
    write_log(tmp_path / 'labels.tsv', rows, range(0, 50), label_shift=1)
    (tmp_path / 'noidx.tsv').write_text('label\tpredict\tradius\tcorrect\n1\t1\t0.5\t1\n')
    import scipy.io as sio
    sio.savemat(tmp_path / 'bare.mat', {'hard': np.array([0.3, -1.0])})
    label = rows['label'][0]
    for args, message in (([tmp_path / 'a.tsv', tmp_path / 'dup.tsv'], 'logs image 140 twice (lines 9 and 32)'),
                          ([tmp_path / 'a.tsv', tmp_path / 'labels.tsv'], f'image 0 has label {label} in'),
                          ([tmp_path / 'a.tsv', tmp_path / 'noidx.tsv'], 'has no idx column'),
                          ([tmp_path / 'a.tsv', tmp_path / 'bare.mat'], 'holds no image indices'),
                          ([tmp_path / 'a.tsv'], 'a comparison needs two or more runs'),
                          ([tmp_path / 'a.tsv', tmp_path / 'missing.tsv'], 'missing.tsv does not exist'),
                          ([tmp_path / 'a.tsv', tmp_path / 'labels.tsv', '--labels', 'A'], '1 labels for 2 files'),
                          ([tmp_path / 'a.tsv', tmp_path / '.' / 'a.tsv'], 'is given twice')):
        assert run(*args, '--out', tmp_path / 'o') == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count('\n') == 1 and 'Traceback' not in err, (args, err)
    assert not list(tmp_path.glob('o.*')) and not list(tmp_path.glob('.o*'))


def test_runs_at_other_sigmas_are_refused_unless_asked_and_the_table_prints_both(tmp_path, capsys):
    # a real run at sigma 0.5 on five of the demo's images (an edited sigma in a JSON is refused as an edit)
    other = certify_digits(tmp_path / 'other', 'gaussian', sigma=0.5, checkpoint='digits-gaussian-0.25.pth')
    capsys.readouterr()
    files = [os.path.join(DEMO, 'macer.json'), other, '--shared']
    assert run(*files, '--out', tmp_path / 'o') == 2
    err = capsys.readouterr().err
    assert 'macer.json was certified at sigma 0.25 and' in err and 'at sigma 0.5' in err and '--other_settings' in err
    assert err.count('\n') == 1 and not list(tmp_path.glob('o.*'))
    # --other_sigma, the flag's earlier name, is --other_settings
    assert run(*files, '--labels', 'M', 'G', '--other_sigma', '--out', tmp_path / 'o') == 0
    md = (tmp_path / 'o.md').read_text()
    assert '| M | consistency | 0.25 |' in md and '| G | digests | 0.5 |' in md
    assert 'other settings (--other_settings): sigma, N0, N differ' in md


def test_compare_runs_without_torch(tmp_path):
    files = [os.path.join(DEMO, f'{m}.json') for m in ('macer', 'gaussian')]
    r = run_without_torch(os.path.join(ROOT, 'visualize', 'compare.py'), *files, '--out', tmp_path / 'o')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'o.png').exists()
