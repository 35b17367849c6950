"""Comparisons that keep their level (issue 27): Newcombe's method 10 as published, the exact sign-flip test, paired
intervals whose coverage and null rejection rate are measured where two models differ on few images or not at all,
no interval pretending where none is honest, refusals of runs made with other settings, and a figure that stays
legible with six runs."""
import itertools
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binomtest, norm

from conftest import ROOT, certify_digits

sys.path.insert(0, os.path.join(ROOT, 'visualize'))
import compare  # noqa: E402
from rs.compare import (Estimate, betting_interval, bootstrap_mean, clopper_pearson, coverage, few_differences,  # noqa: E402
                        format_level, mcnemar_exact, newcombe_paired, paired_difference, run_summary, sign_flip_test)
from rs.results import tsv_radii  # noqa: E402

DEMO = os.path.join(ROOT, 'reproduce', 'results', 'digits-0.25')
SIX = os.path.join(ROOT, 'reproduce', 'results', 'six-digits-0.25')
LOGS = os.path.join(ROOT, 'reproduce', 'published')


def command(capsys, *args):
    capsys.readouterr()
    try:
        status = compare.main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def refused(capsys, words, *args):
    status, _, err = command(capsys, *args)
    assert status == 2 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert words in err, (words, err)


# --- 1. Newcombe's method 10, as published -------------------------------------------------------------

# Newcombe (1998), Table II, method 10 (e, f, g, h = both, A only, B only, neither), as Newcombe prints them;
# and two tables Fagerland, Lydersen and Laake's code (R package contingencytables) gives, to 4 decimals
PUBLISHED = [((36, 12, 2, 0), (0.0569, 0.3404)), ((18, 12, 2, 18), (0.0562, 0.3290)), ((53, 0, 0, 1), (-0.0729, 0.0729)),
             ((0, 30, 0, 0), (0.8395, 1.0000)), ((59, 6, 16, 80), (-0.1186, -0.0046))]


@pytest.mark.parametrize('table, ends', PUBLISHED)
def test_newcombe_method_10_gives_the_published_worked_examples(table, ends):
    d, low, high = newcombe_paired(*table)
    assert d == pytest.approx((table[1] - table[2]) / sum(table))
    assert (round(low, 4), round(high, 4)) == ends


def newcombe_reference(a, b, c, d, level=0.95):
    """A second, independent method 10: Wilson limits found as the roots of |t - p| = z sqrt(t (1 - t) / n), the
    corrected correlation in Fagerland, Lydersen and Laake's three branches, on the table [[a, b], [c, d]]."""
    n = a + b + c + d
    z = norm.ppf(1 - (1 - level) / 2)

    def limits(k):
        p = k / n
        f = (lambda t: abs(t - p) - z * math.sqrt(t * (1 - t) / n))
        low = 0.0 if k == 0 else brentq(f, 0.0, p - 1e-13 if k == n else p, xtol=1e-15)
        high = 1.0 if k == n else brentq(f, p + 1e-13 if k == 0 else p, 1.0, xtol=1e-15)
        return low, high
    (l1, u1), (l2, u2) = limits(a + b), limits(a + c)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    x = a * d - b * c
    psi = 0.0 if margins == 0 else ((x - n / 2) if x > n / 2 else 0.0 if x >= 0 else x) / math.sqrt(margins)
    p1, p2 = (a + b) / n, (a + c) / n
    return (p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)),
            p1 - p2 + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)))


def test_newcombe_agrees_with_a_second_implementation_on_every_small_table():
    for n in range(1, 11):
        for a, b, c in itertools.product(range(n + 1), repeat=3):
            d = n - a - b - c
            if d < 0 or b + c == 0:
                continue  # with no discordant item the interval is widened (the next test)
            _, low, high = newcombe_paired(a, b, c, d)
            assert (low, high) == pytest.approx(newcombe_reference(a, b, c, d), abs=1e-9), (a, b, c, d)


def test_no_interval_has_zero_width_where_the_runs_never_disagree():
    # version 1.0: (0, 0, 0); two identical runs printed +0.00 [+0.00, +0.00]
    for table in ((250, 0, 0, 250), (500, 0, 0, 0), (0, 0, 0, 10), (1, 0, 0, 0)):
        n = sum(table)
        q = 1 - 0.025 ** (1 / n)  # the exact bound on the share of discordant images
        for e in (newcombe_paired(*table), paired_difference(0, 0, n)):
            assert e.value == 0 and e.low <= -q + 1e-12 and e.high >= q - 1e-12


def test_the_paired_difference_holds_zero_wherever_mcnemar_is_far_from_rejecting():
    # 5 images right only for A, none only for B, of 500: McNemar's p is 0.0625; Newcombe still excludes 0, the
    # exact interval does not
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert newcombe_paired(245, 5, 0, 250).low > 0
    e = paired_difference(5, 0, 500)
    assert e.low < 0 < e.high and e.value == pytest.approx(0.01)
    # and it is the range of q (2 pi - 1) over the two Clopper-Pearson intervals at 97.5 %
    (ql, qh), (pl, ph) = (tuple(map(float, clopper_pearson(k, m, 0.975))) for k, m in ((86, 500), (26, 86)))
    assert paired_difference(26, 60, 500)[1:] == pytest.approx((qh * (2 * pl - 1), ql * (2 * ph - 1)))


# --- 2. the sign-flip test, exact ---------------------------------------------------------------------

def test_the_sign_flip_p_value_is_the_exact_enumeration():
    rng = np.random.default_rng(3)
    for m in range(1, 11):
        d = np.concatenate([np.zeros(50), np.round(rng.normal(0.1, 0.3, m), 2)])
        x = d[d != 0]
        sums = [abs(sum(s * v for s, v in zip(signs, x))) for signs in itertools.product((1, -1), repeat=x.size)]
        t = abs(x.sum())
        exact = np.mean([s >= t - 1e-9 for s in sums])
        p, count, is_exact = sign_flip_test(d)
        assert is_exact and count == x.size and p == pytest.approx(exact)
    assert sign_flip_test(np.zeros(9)) == (1.0, 0, True)
    # on 0/1 outcomes it is the exact McNemar test
    for only_a, only_b in ((5, 0), (12, 7), (3, 9)):  # exact enumeration (20 or fewer differ)
        d = np.r_[np.ones(only_a), -np.ones(only_b), np.zeros(40)]
        assert sign_flip_test(d)[0] == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def test_the_monte_carlo_sign_flip_p_value_matches_the_exact_distribution():
    # 30 differing images with integer values: the exact null distribution of the sum by convolution
    rng = np.random.default_rng(5)
    x = rng.integers(1, 4, 30) * rng.choice([-1, 1], 30, p=[0.35, 0.65])
    dist = {0: 1.0}
    for v in x:
        new = {}
        for s, w in dist.items():
            for t in (s + v, s - v):
                new[t] = new.get(t, 0.0) + w / 2
        dist = new
    exact = sum(w for s, w in dist.items() if abs(s) >= abs(x.sum()))
    p, m, is_exact = sign_flip_test(x.astype(float))
    assert not is_exact and m == 30
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / 100_000) + 1e-5


# --- measured: the level under the null, and coverage where few images differ --------------------------

@pytest.fixture(scope='module')
def populations():
    macer, gaussian = (tsv_radii(os.path.join(DEMO, f'{m}.hard.tsv')) for m in ('macer', 'gaussian'))
    cohen, salman = (tsv_radii(os.path.join(LOGS, f'{w}-cifar10-0.25.tsv')) for w in ('cohen', 'salman'))
    return {'demo': (macer, gaussian), 'cifar': (cohen, salman), 'few': (cohen, few_differences(cohen, salman))}


def test_under_the_null_no_paired_interval_or_test_rejects_more_than_its_level(populations):
    reps = 300
    error = 2 * math.sqrt(0.05 * 0.95 / reps)  # two Monte Carlo standard errors
    for name in ('demo', 'cifar'):
        c = coverage(*populations[name], images=100, replications=reps, radii=(0.0, 0.25, 0.5), seed=7,
                     resamples=500, draws=1000)
        for kind in ('null difference', 'null mcnemar', 'null acr difference', 'null sign-flip'):
            assert c[kind] <= 0.05 + error, (name, kind, c[kind])


def test_where_two_models_differ_on_two_percent_of_the_images_the_intervals_keep_their_level(populations):
    reps = 300
    error = 2 * math.sqrt(0.05 * 0.95 / reps)
    c = coverage(*populations['few'], images=100, replications=reps, radii=(0.0, 0.25, 0.5), seed=8, resamples=500,
                 draws=1000, legacy=True)
    for kind in ('difference', 'acr difference'):
        assert c[kind] >= 0.95 - error, (kind, c[kind])
    # what they replaced did not: the paired BCa of the ACR difference (often no interval at all, a point)
    assert c['bca difference'] < 0.95 - error


# --- 3. no interval where none is honest --------------------------------------------------------------

def test_degenerate_samples_say_why_there_is_no_interval():
    one = run_summary(np.array([0.3]))
    assert one['acr'].low is None and 'too few' in one['acr'].why or 'every one' in one['acr'].why
    capped = run_summary(np.full(100, 0.8), grid=(0.75,))
    # Clopper-Pearson stays exact at the cap: [0.025^(1/100), 1]
    assert capped['accuracy_low'][0] == pytest.approx(0.025 ** (1 / 100)) and capped['accuracy_high'][0] == 1.0
    assert capped['acr'].low is None and 'has the value 0.8' in capped['acr'].why
    assert run_summary(np.full(50, -1.0))['acr'].why  # every image abstaining: no ACR interval either
    # the betting interval of a difference is never a point
    e = betting_interval(np.zeros(100), -0.8, 0.8)
    assert e.value == 0 and e.low < -0.01 and e.high > 0.01


def test_the_n_a_reaches_the_table(tmp_path, capsys):
    write = (lambda path, rows: path.write_text('idx\tlabel\tpredict\tradius\tcorrect\ttime\n' + ''.join(
        f'{i}\t1\t1\t{r}\t1\t0:00:01\n' for i, r in enumerate(rows))))
    write(tmp_path / 'a.tsv', [0.8] * 30)
    write(tmp_path / 'b.tsv', [0.8] * 29 + [0.5])
    assert command(capsys, tmp_path / 'a.tsv', tmp_path / 'b.tsv', '--out', tmp_path / 'o')[0] == 0
    md = (tmp_path / 'o.md').read_text()
    assert '0.800 [n/a: every one of the 30 images has the value 0.8' in md
    assert '[0.800, 0.800]' not in md


# --- 4 and 5. settings and identity -------------------------------------------------------------------

def test_runs_with_other_n_alpha_bound_or_mode_are_refused_unless_asked(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location('rc', os.path.join(ROOT, 'visualize', 'recompute.py'))
    recompute = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recompute)
    shutil.copytree(DEMO, tmp_path / 'demo')
    assert recompute.main([str(tmp_path / 'demo' / 'macer.json'), '--bound', 'bernstein', '--out',
                           str(tmp_path / 'bern')]) == 0
    assert recompute.main([str(tmp_path / 'demo' / 'gaussian.json'), '--alpha', '0.01', '--out',
                           str(tmp_path / 'a01')]) == 0
    # a Bernstein recomputation against the Clopper-Pearson certificates of the same run: another bound
    refused(capsys, 'at bound bernstein', tmp_path / 'bern.json', DEMO + '/gaussian.json', '--out', tmp_path / 'o')
    refused(capsys, 'at alpha 0.01', DEMO + '/macer.json', tmp_path / 'a01.json', '--out', tmp_path / 'o')
    other = certify_digits(tmp_path / 'n', 'g', num_img=100, skip=10, N=200, checkpoint='digits-gaussian-0.25.pth')
    refused(capsys, 'at N0 50', DEMO + '/macer.json', other, '--out', tmp_path / 'o')
    assert command(capsys, tmp_path / 'bern.json', DEMO + '/gaussian.json', '--other_settings', '--out',
                   tmp_path / 'o')[0] == 0
    md = (tmp_path / 'o.md').read_text()
    assert '| bern.json | digests | 0.25 | 100 | 10000 | 0.001 | bernstein | hard |' in md and 'bound differ' in md


def test_logs_without_a_record_are_labelled_unchecked_in_the_table(tmp_path, capsys):
    files = [os.path.join(LOGS, f'cohen-cifar10-{s}.tsv') for s in ('0.25', '1.00')]
    # the published logs carry their settings in the manifest beside them: sigma 0.25 and 1.00 are refused
    refused(capsys, 'at sigma 0.25 and', *files, '--out', tmp_path / 'o')
    # copies of them elsewhere have no record: compared, and labelled unchecked in the table itself
    for f in files:
        shutil.copy(f, tmp_path)
    copies = [tmp_path / os.path.basename(f) for f in files]
    assert command(capsys, *copies, '--labels', 'a', 'b', '--out', tmp_path / 'o')[0] == 0
    md = (tmp_path / 'o.md').read_text()
    assert '| a | unchecked | - |' in md and '| b | unchecked | - |' in md and 'Unchecked: a, b' in md
    assert 'Unchecked: a, b' in (tmp_path / 'o.tex').read_text()
    # an edited published log is refused naming it
    shutil.copytree(LOGS, tmp_path / 'published')
    log = tmp_path / 'published' / 'cohen-cifar10-0.25.tsv'
    log.write_text(log.read_text().replace('\t0\t', '\t1\t', 1))
    refused(capsys, 'is not the published log', log, tmp_path / 'published' / 'salman-cifar10-0.25.tsv', '--out',
            tmp_path / 'p')


# --- 6. level and grid ------------------------------------------------------------------------------------

@pytest.mark.parametrize('level', ['0.05', '0.5', '1', '1.5', 'nan'])
def test_a_level_outside_one_half_to_one_is_refused(tmp_path, capsys, level):
    status, _, err = command(capsys, DEMO + '/macer.json', DEMO + '/gaussian.json', '--level', level, '--out',
                             tmp_path / 'o')
    assert status == 2 and 'a confidence level strictly between 0.5 and 1' in err and err.count('\n') == 1


def test_a_level_is_labelled_with_its_digits_and_resampled_enough(tmp_path, capsys):
    assert [format_level(x) for x in (0.95, 0.999, 0.995, 0.8)] == ['95%', '99.9%', '99.5%', '80%']
    from rs.compare import resamples_for
    assert resamples_for(0.95) == 2000 and resamples_for(0.999) == 40000
    assert command(capsys, DEMO + '/macer.json', DEMO + '/gaussian.json', '--level', '0.999', '--out',
                   tmp_path / 'o')[0] == 0
    md = (tmp_path / 'o.md').read_text()
    assert 'ACR [99.9% interval]' in md and '100%' not in md and '40000 resamples' in md


def test_the_grid_counts_each_radius_once_in_holms_correction(tmp_path, capsys):
    files = [DEMO + '/macer.json', DEMO + '/gaussian.json']
    assert command(capsys, *files, '--grid', '0.5', '0.5', '0.5', '--out', tmp_path / 'o')[0] == 0
    assert 'adjusted over the 3 p-values' in (tmp_path / 'o.md').read_text()  # r 0.5, ACR, accuracy under noise
    assert command(capsys, *files, '--grid', '0.5', '0', '--out', tmp_path / 'p')[0] == 0
    rows = [line for line in (tmp_path / 'p.md').read_text().splitlines() if 'r = ' in line]
    assert [r.split(' | ')[1] for r in rows] == ['r = 0.00', 'r = 0.50']


def test_an_abstention_marked_correct_is_refused_with_its_line(tmp_path, capsys):
    (tmp_path / 'a.tsv').write_text('idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0:00:01\n'
                                    '1\t2\t-1\t0.0\t1\t0:00:01\n')
    shutil.copy(os.path.join(LOGS, 'cohen-cifar10-0.25.tsv'), tmp_path / 'b.tsv')
    refused(capsys, 'a.tsv, line 3: an abstention (predict -1) is marked correct', tmp_path / 'a.tsv',
            tmp_path / 'b.tsv', '--shared', '--out', tmp_path / 'o')


def test_the_tables_give_each_accuracy_its_interval():
    a, b = (compare.read_runs([os.path.join(DEMO, f'{m}.json') for m in ('macer', 'gaussian')]))
    result = compare.comparison([a, b])
    texts = compare.tables(['A', 'B'], [a, b], result)
    row = next(r for r in result['pairs'][0][2] if r['radius'] == 0.25)
    cell = f'{row["a"].value:.2f} [{row["a"].low:.2f}, {row["a"].high:.2f}]'
    assert cell in texts['.md'] and cell in texts['.tex']


# --- 7. many runs ----------------------------------------------------------------------------------------

SIX_RUNS = ['gaussian', 'macer', 'smoothadv', 'stability', 'consistency', 'smoothmix']


def test_six_runs_against_a_reference_and_in_all_pairs_stay_legible(tmp_path, capsys):
    files = [os.path.join(SIX, f'{m}.json') for m in SIX_RUNS]
    labels = ['Gaussian', 'MACER', 'SmoothAdv', 'Stability', 'Consistency', 'SmoothMix']
    runs = compare.read_runs(files)
    for pairs, count in ((compare.pairs_of(6), 5), (compare.pairs_of(6, 2), 5), (compare.pairs_of(6, 0, True), 15)):
        assert len(pairs) == count
        result = compare.comparison(runs, pairs=pairs)
        fig = compare.figure(labels, runs, result, title='six models on digits')
        assert compare.text_overlaps(fig) == []
    assert command(capsys, *files, '--labels', *labels, '--reference', 'MACER', '--out', tmp_path / 'o')[0] == 0
    md = (tmp_path / 'o.md').read_text()
    assert md.count('| MACER vs ') > 0 and '| Gaussian vs ' not in md
    refused(capsys, 'is none of the runs', *files, '--labels', *labels, '--reference', 'x', '--out', tmp_path / 'p')
    refused(capsys, 'choose one', *files, '--reference', 'x', '--all_pairs', '--out', tmp_path / 'p')
    # the bound-on-pA panel shows where the data are: 1 - bound on a log axis
    fig = compare.figure(labels, runs, compare.comparison(runs))
    assert fig.axes[2].get_xscale() == 'log'
