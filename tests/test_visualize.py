"""visualize/: curves and tables from result files, checked against the published logs."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io as sio

from conftest import ROOT, certification, run_without_torch

sys.path.insert(0, os.path.join(ROOT, 'visualize'))
import plotcurves  # noqa: E402

# Cohen's and Salman's own logs, shipped with the repository (reproduce/published/README.md)
LOGS = os.path.join(ROOT, 'reproduce', 'published')

# the MACER paper's Cifar-10 table (docs/METHOD.md, "Published numbers"), certified accuracy at r = 0.00 .. 2.25
PAPER = {
    ('salman', '0.25'): [0.74, 0.67, 0.57, 0.47, 0, 0, 0, 0, 0, 0],
    ('salman', '0.50'): [0.50, 0.46, 0.44, 0.40, 0.38, 0.33, 0.29, 0.23, 0, 0],
    ('salman', '1.00'): [0.45, 0.41, 0.38, 0.35, 0.32, 0.28, 0.25, 0.22, 0.19, 0.17],
    ('cohen', '0.25'): [0.75, 0.60, 0.43, 0.26, 0, 0, 0, 0, 0, 0],
    ('cohen', '0.50'): [0.65, 0.54, 0.41, 0.32, 0.23, 0.15, 0.09, 0.04, 0, 0],
    ('cohen', '1.00'): [0.47, 0.39, 0.34, 0.28, 0.21, 0.17, 0.14, 0.08, 0.05, 0.03],
}


def run(*args):
    return plotcurves.main([str(a) for a in args])


def published_rows(tmp_path, who):
    files = [os.path.join(LOGS, f'{who}-cifar10-{s}.tsv') for s in ('0.25', '0.50', '1.00')]
    assert run(*files, '--out', tmp_path / who) == 0
    lines = (tmp_path / f'{who}.csv').read_text().splitlines()[1:]
    return {s: [float(v) for v in line.split(',')[1:]] for s, line in zip(('0.25', '0.50', '1.00'), lines)}


def test_salman_logs_reproduce_the_papers_salman_accuracy_rows_exactly_but_not_its_acr(tmp_path):
    rows = published_rows(tmp_path, 'salman')
    for s, row in rows.items():
        assert [f'{v:.2f}' for v in row[:10]] == [f'{v:.2f}' for v in PAPER[('salman', s)]], s
    # the ACR column of the paper (0.538 / 0.709 / 0.787) does not follow from these logs
    assert [f'{row[10]:.3f}' for row in rows.values()] == ['0.546', '0.697', '0.844']
    # the Markdown table prints the same two decimals
    md = (tmp_path / 'salman.md').read_text()
    assert '| salman-cifar10-0.50 | 0.50 | 0.46 | 0.44 | 0.40 | 0.38 | 0.33 | 0.29 | 0.23 | 0.00 | 0.00 |' in md


def test_cohen_logs_match_the_papers_cohen_rows_within_a_hundredth_but_at_large_radii(tmp_path):
    rows = published_rows(tmp_path, 'cohen')
    # compared as the table prints them, at two decimals
    for s in ('0.25', '0.50'):
        assert np.allclose(np.round(rows[s][:10], 2), PAPER[('cohen', s)], atol=0.01 + 1e-9), s
    one = np.round(rows['1.00'][:10], 2)
    assert np.allclose(one[:7], PAPER[('cohen', '1.00')][:7], atol=0.01 + 1e-9)
    assert (np.abs(one[7:] - PAPER[('cohen', '1.00')][7:]) > 0.01 + 1e-9).all()  # radii >= 1.75 differ


def write_tsv(path, rows, time_format='seconds'):
    with open(path, 'w') as f:
        f.write('idx\tlabel\tpredict\tradius\tcorrect\ttime\n')
        for i, (label, predict, radius, correct) in enumerate(rows):
            t = '1.5' if time_format == 'seconds' else '0:00:01.500000'
            f.write(f'{i}\t{label}\t{predict}\t{radius}\t{correct}\t{t}\n')


def test_semantics_on_small_logs(tmp_path):
    write_tsv(tmp_path / 'a.tsv', [(1, 1, 0.5, 1),     # certified exactly at 0.5: counts at 0.5
                                   (2, 3, 0.9, 0),     # wrong with a positive radius: never counts
                                   (4, -1, 0.0, 0),    # abstained
                                   (5, 5, 0.0, 1),     # correct with radius 0: counts at 0 only
                                   (6, 6, 1.3, 1)], time_format='timedelta')
    sio.savemat(tmp_path / 'b.mat', {'hard': np.array([0.25, -1.0, 0.74]), 'soft': np.array([0.1, 0.2, -1.0])})
    # --no_intervals: the paper's bare format, exactly as before intervals existed
    assert run(tmp_path / 'a.tsv', tmp_path / 'b.mat', '--labels', 'A', 'B,with comma', '--no_intervals',
               '--out', tmp_path / 'o') == 0
    assert (tmp_path / 'o.md').read_text() == (
        '| model | 0.00 | 0.25 | 0.50 | 0.75 | 1.00 | 1.25 | 1.50 | 1.75 | 2.00 | 2.25 | ACR |\n'
        '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
        '| A | 0.60 | 0.40 | 0.40 | 0.20 | 0.20 | 0.20 | 0.00 | 0.00 | 0.00 | 0.00 | 0.360 |\n'
        '| B,with comma | 0.67 | 0.67 | 0.33 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.330 |\n')
    csv = (tmp_path / 'o.csv').read_text().splitlines()
    assert csv[0] == 'label,0,0.25,0.5,0.75,1,1.25,1.5,1.75,2,2.25,ACR'
    a = [float(v) for v in csv[1].split(',')[1:]]
    assert a[:7] == pytest.approx([3 / 5, 2 / 5, 2 / 5, 1 / 5, 1 / 5, 1 / 5, 0.0])
    assert a[-1] == pytest.approx((0.5 + 0.0 + 1.3) / 5)
    assert csv[2].startswith('"B,with comma",')
    b = [float(v) for v in csv[2].split(',', 2)[2].split(',')]
    assert b[:4] == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0.0]) and b[-1] == pytest.approx((0.25 + 0.74) / 3)
    tex = (tmp_path / 'o.tex').read_text()
    # the best of each column in bold (ties all bold); a column where every row is equal has no best
    assert 'A & 0.60 & 0.40 & \\textbf{0.40} & \\textbf{0.20} & \\textbf{0.20} & \\textbf{0.20} & 0.00 & 0.00' in tex
    assert 'B,with comma & \\textbf{0.67} & \\textbf{0.67} & 0.33 & 0.00' in tex
    assert 'interval' not in tex and tex.endswith('\\end{tabular}\n')
    png = (tmp_path / 'o.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
    assert (tmp_path / 'o.pdf').read_bytes()[:5] == b'%PDF-'
    # --mode soft reads the .mat file's soft results
    assert run(tmp_path / 'b.mat', '--mode', 'soft', '--out', tmp_path / 's') == 0
    assert (tmp_path / 's.csv').read_text().splitlines()[1].startswith('b,0.6666')


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    sio.savemat(tmp_path / 'h.mat', {'hard': np.array([0.3])})
    (tmp_path / 'x.tsv').write_text('a\tb\n1\t2\n')
    for args, message in (([tmp_path / 'h.mat', '--labels', 'A', 'B'], '2 labels for 1 files'),
                          ([tmp_path / 'h.mat', '--mode', 'soft'], "no 'soft' results"),
                          ([tmp_path / 'missing.mat'], 'does not exist'),
                          ([tmp_path / 'x.tsv'], 'is not a certification log')):
        assert run(*args, '--out', tmp_path / 'o') == 2
        err = capsys.readouterr().err
        assert message in err and err.count('\n') == 1


def v73_header(path):
    """The 128-byte header MATLAB writes in front of a v7.3 (HDF5) file: scipy cannot read those."""
    text = b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .'
    path.write_bytes(text.ljust(116, b' ') + b'\0' * 8 + b'\x00\x02' + b'IM' + b'\0' * 384)


def test_damaged_or_foreign_result_files_are_refused_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / 'empty.mat').write_bytes(b'')
    (tmp_path / 'text.mat').write_text('hard = [0.1 0.2]\n')
    sio.savemat(tmp_path / 'string.mat', {'hard': 'radii'})
    sio.savemat(tmp_path / 'cell.mat', {'hard': np.array([np.array([0.1]), 'x'], dtype=object)})
    sio.savemat(tmp_path / 'struct.mat', {'hard': {'radius': np.array([0.1])}})
    v73_header(tmp_path / 'v73.mat')
    sio.savemat(tmp_path / 'inf.mat', {'hard': np.array([0.2, np.inf])})
    sio.savemat(tmp_path / 'nan.mat', {'hard': np.array([0.2, np.nan])})
    write_tsv(tmp_path / 'correct2.tsv', [(1, 1, 0.5, 2)])
    write_tsv(tmp_path / 'nan.tsv', [(1, 1, float('nan'), 1)])
    sio.savemat(tmp_path / 'good.mat', {'hard': np.array([0.3, -1.0])})
    for args, message in (([tmp_path / 'empty.mat'], 'is empty (0 bytes), not a .mat file'),
                          ([tmp_path / 'text.mat'], 'cannot read'),
                          ([tmp_path / 'string.mat'], '"hard" holds text, not an array of radii'),
                          ([tmp_path / 'cell.mat'], '"hard" holds a cell array, not an array of radii'),
                          ([tmp_path / 'struct.mat'], '"hard" holds a struct, not an array of radii'),
                          ([tmp_path / 'v73.mat'], 'is a MATLAB v7.3 (HDF5) file'),
                          ([tmp_path / 'inf.mat'], '"hard"[1] is inf, neither -1'),
                          ([tmp_path / 'nan.mat'], '"hard"[1] is nan, neither -1'),
                          ([tmp_path / 'correct2.tsv'], 'line 2: correct is 2, not 0 or 1'),
                          ([tmp_path / 'nan.tsv'], 'line 2: radius nan is not a finite number >= 0'),
                          ([tmp_path / 'good.mat', '--max_radius', 'inf'], '--max_radius: must be a positive number'),
                          ([tmp_path / 'good.mat', '--grid', '0', 'nan'], '--grid: must be a number >= 0'),
                          ([tmp_path / 'good.mat', '--ylim', '1', '0.5'], 'LOW must be below HIGH')):
        try:
            code = run(*args, '--out', tmp_path / 'o')
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count('\n') == 1 and 'Traceback' not in err, (args, err)
    assert not [f for f in os.listdir(tmp_path) if f.startswith('o.') or f.startswith('.o')]


def test_outputs_are_all_written_or_none(tmp_path, monkeypatch):
    sio.savemat(tmp_path / 'a.mat', {'hard': np.array([0.3, -1.0])})
    assert run(tmp_path / 'a.mat', '--out', tmp_path / 'o') == 0
    before = {ext: (tmp_path / f'o{ext}').read_bytes() for ext in plotcurves.OUTPUTS}
    sio.savemat(tmp_path / 'b.mat', {'hard': np.array([0.6, 0.7])})
    import matplotlib.figure

    def broken(self, path, **kwargs):
        if kwargs.get('format') == 'pdf':
            raise OSError(28, 'No space left on device')
        return original(self, path, **kwargs)
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', broken)
    assert run(tmp_path / 'b.mat', '--out', tmp_path / 'o') == 2
    # the tables and the PNG were made before the PDF failed: none of them replaced the earlier outputs
    assert {ext: (tmp_path / f'o{ext}').read_bytes() for ext in plotcurves.OUTPUTS} == before
    assert sorted(os.listdir(tmp_path)) == ['.o.macer-outputs', 'a.mat', 'b.mat'] + sorted(f'o{ext}' for ext in plotcurves.OUTPUTS)


def test_the_figure_marks_the_largest_certifiable_radius(tmp_path):
    from rs.runs import read_run
    shipped = os.path.join(ROOT, 'reproduce', 'results', 'digits-0.25', 'macer.mat')  # N 10000, alpha 0.001
    radii, caption = plotcurves.cliffs_of([plotcurves.run_record(read_run(shipped))])
    assert [round(r, 4) for r in radii] == [0.7996] and '0.80 (hard)' in caption and 'N = 10000' in caption
    # a published log: its manifest gives N 100000, alpha 0.001, sigma 0.25, whose cliff is 0.953
    cohen = read_run(os.path.join(LOGS, 'cohen-cifar10-0.25.tsv'))
    assert [round(r, 3) for r in plotcurves.cliffs_of([plotcurves.run_record(cohen)])[0]] == [0.953]
    import shutil
    shutil.copy(os.path.join(LOGS, 'cohen-cifar10-0.25.tsv'), tmp_path / 'copy.tsv')  # a log with no record
    assert plotcurves.cliffs_of([plotcurves.run_record(read_run(str(tmp_path / 'copy.tsv')))]) == ([], '')
    fig = plotcurves.figure(['run'], [np.array([0.3, 0.8, -1.0])], 1.0, ylim=(0.5, 1.0), cliffs=radii,
                            caption=caption)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.5, 1.0)
    vertical = [line for line in ax.lines if list(line.get_xdata()) == [radii[0], radii[0]]]
    assert len(vertical) == 1 and vertical[0].get_color() == 'black'
    assert [t.get_text() for t in fig.texts] == [caption]
    assert run(shipped, '--out', tmp_path / 'o', '--ylim', '0.5', '1') == 0


def test_a_long_title_stays_inside_the_figure():
    title = 'digits, sigma = 0.25, N = 10000, 100 test images (every 10th from 0), a title wider than the axes'
    fig = plotcurves.figure(['run'], [np.array([0.3, 0.8, -1.0])], 1.0, title=title)
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    assert fig.axes[0].get_title().replace('\n', ' ') == title


def test_runs_without_torch(tmp_path):
    sio.savemat(tmp_path / 'h.mat', {'hard': np.array([0.3, -1.0])})
    r = run_without_torch(os.path.join(ROOT, 'visualize', 'plotcurves.py'), tmp_path / 'h.mat', '--out', tmp_path / 'o')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'o.png').exists()


@pytest.mark.skipif(any(shutil.which(p) is None for p in ('octave', 'gnuplot', 'gs')),
                    reason='GNU Octave, gnuplot and Ghostscript are not all installed '
                           '(apt-get install octave gnuplot-nox ghostscript fonts-freefont-otf)')
def test_plotcurves_m_under_octave(tmp_path):
    sio.savemat(tmp_path / 'a.mat', {'hard': np.array([0.2, 0.5, -1.0, 0.9])})
    sio.savemat(tmp_path / 'b.mat', {'hard': np.array([0.1, -1.0, -1.0, 0.4]), 'soft': np.array([0.0, 0, 0, 0])})
    # without a display Octave draws through gnuplot and Ghostscript; MATLAB needs none of this
    script = (f"addpath('{os.path.join(ROOT, 'visualize')}'); "
              f"toolkits = available_graphics_toolkits(); "
              f"if any(strcmp(toolkits, 'gnuplot')), graphics_toolkit('gnuplot'); end; "
              f"plotcurves({{'{tmp_path / 'a.mat'}', '{tmp_path / 'b.mat'}'}}, {{'A', 'B'}}, '{tmp_path / 'o.png'}', 1.0)")
    r = subprocess.run(['octave', '--no-gui', '--no-window-system', '--quiet', '--eval', script],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    png = (tmp_path / 'o.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 2000
    import matplotlib.image
    pixels = matplotlib.image.imread(str(tmp_path / 'o.png'))
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    blue = (pixels[..., 2] > 0.8) & (pixels[..., 0] < 0.3) & (pixels[..., 1] < 0.3)
    assert red.sum() > 100 and blue.sum() > 100  # both curves were drawn


def test_training_curves_of_several_runs_with_their_certified_acr(tmp_path, capsys):
    import trainingcurves
    runs = {}
    for name, growth in (('a', 1.0), ('b', 3.0)):
        folder = tmp_path / name
        folder.mkdir()
        records = [{'epoch': e, 'lr': 0.01, 'classification': 1.0 / e, 'robustness': 0.1 * e,
                    'train_acc_noise': 0.5 + 0.1 * e, 'weight_norm': 10 + growth * e, 'grad_norm': 1.0,
                    'lambda': 4.0, 'hinge_kept': 0.3, 'seconds': 1.0} for e in range(1, 5)]
        (folder / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
        runs[name] = folder
    import torch
    torch.save({'run_id': 'run-a', 'net': {'w': torch.ones(1)}, 'epoch': 4}, runs['a'] / 'latest.pth')
    mat = tmp_path / 'mat'
    mat.mkdir()
    two, four = (certification(mat, epoch, model, 'run-a') for epoch, model in ((2, 'macer'), (4, 'gaussian')))
    (mat / '9.json').write_text(json.dumps({'status': 'running'}))  # unfinished: left out
    logs = [trainingcurves.read_log(str(runs[n] / 'log.jsonl')) for n in 'ab']
    acrs = [trainingcurves.certified_acr(str(mat), str(runs['a'] / 'log.jsonl'))[0], {}]
    assert acrs[0] == {2: two, 4: four}
    fig = trainingcurves.figure(['A', 'B'], logs, acrs)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert {'classification loss', 'weight norm ||w||', 'share kept by the hinge', 'certified ACR (hard)'} <= set(titles)
    panel = next(ax for ax in fig.axes if ax.get_title() == 'weight norm ||w||')
    assert [list(line.get_ydata()) for line in panel.lines] == [[11.0, 12.0, 13.0, 14.0], [13.0, 16.0, 19.0, 22.0]]
    assert trainingcurves.main([str(runs['a'] / 'log.jsonl'), str(runs['b'] / 'log.jsonl'), '--labels', 'A', 'B',
                                '--matdirs', str(mat), '-', '--out', str(tmp_path / 'curves')]) == 0
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    capsys.readouterr()
    (tmp_path / 'bad.jsonl').write_text('{"epoch": 1}\nnot json\n')
    assert trainingcurves.main([str(tmp_path / 'bad.jsonl'), '--out', str(tmp_path / 'x')]) == 2
    err = capsys.readouterr().err
    assert 'bad.jsonl, line 2, is not a record of a training log' in err and err.count('\n') == 1


def test_tables_and_curves_carry_intervals_over_the_test_images_by_default(tmp_path):
    from statsmodels.stats.proportion import proportion_confint
    rows = [(1, 1 if i % 4 else 2, 0.1 * (i % 9), int(i % 4 != 0)) for i in range(40)]  # wrong: predicted 2
    write_tsv(tmp_path / 'a.tsv', rows)
    assert run(tmp_path / 'a.tsv', '--labels', 'A', '--out', tmp_path / 'o') == 0
    radii = plotcurves.load_radii(str(tmp_path / 'a.tsv'))
    counts = [int(np.sum(radii >= r)) for r in plotcurves.GRID]
    md = (tmp_path / 'o.md').read_text().splitlines()
    # the paper's row as before, then its intervals, then what they cover
    assert md[2].startswith(f'| A | {counts[0] / 40:.2f} | {counts[1] / 40:.2f} |')
    assert md[3].startswith('| 95% interval | [')
    low, high = proportion_confint(counts[1], 40, alpha=0.05, method='beta')
    assert md[3].split(' | ')[2] == f'[{low:.2f}, {high:.2f}]'
    assert 'over the choice of the test images' in md[-1] and 'not the certificates\' alpha' in md[-1]
    csv = (tmp_path / 'o.csv').read_text().splitlines()
    header, values = csv[0].split(','), csv[1].split(',')
    row = dict(zip(header, values))
    assert header[:12] == ['label'] + [f'{r:g}' for r in plotcurves.GRID] + ['ACR'] and row['images'] == '40'
    for r, k in zip(plotcurves.GRID, counts):
        assert (float(row[f'{r:g}_low']), float(row[f'{r:g}_high'])) == pytest.approx(
            proportion_confint(k, 40, alpha=0.05, method='beta'), abs=1e-12)
    assert float(row['ACR_low']) < float(row['ACR']) < float(row['ACR_high'])
    tex = (tmp_path / 'o.tex').read_text()
    assert '{\\scriptsize 95\\% interval}' in tex and '\\par{\\footnotesize ' in tex and 'Intervals (95\\%)' in tex
    # --level: the same table at another level, narrower
    assert run(tmp_path / 'a.tsv', '--labels', 'A', '--level', '0.8', '--out', tmp_path / 'l') == 0
    row80 = dict(zip(*[line.split(',') for line in (tmp_path / 'l.csv').read_text().splitlines()]))
    assert float(row80['0.25_low']) > float(row['0.25_low']) and '| 80% interval |' in (tmp_path / 'l.md').read_text()
    # the figure: a band per curve, its ends the Clopper-Pearson interval
    x, lo, hi = plotcurves.band(radii, 1.0)
    assert (lo[0], hi[0]) == pytest.approx(proportion_confint(counts[0], 40, alpha=0.05, method='beta'))
    fig = plotcurves.figure(['A', 'B'], [radii, radii[:20]], 1.0, bands=[plotcurves.band(radii, 1.0),
                                                                          plotcurves.band(radii[:20], 1.0)])
    assert len(fig.axes[0].collections) == 2


def test_the_accuracy_under_noise_column_comes_from_the_statistics_beside_a_result(tmp_path):
    from rs.runs import read_run
    demo = os.path.join(ROOT, 'reproduce', 'results', 'digits-0.25')
    assert run(os.path.join(demo, 'macer.mat'), os.path.join(LOGS, 'cohen-cifar10-0.25.tsv'), '--labels', 'MACER',
               'Cohen', '--out', tmp_path / 'o') == 0
    md = (tmp_path / 'o.md').read_text()
    noise = read_run(os.path.join(demo, 'macer.json')).noise
    assert md.splitlines()[0].endswith('| ACR | accuracy under noise |')
    assert md.splitlines()[2].endswith(f'| 0.749 | {noise.mean():.3f} |')
    assert '| Cohen |' in md and md.splitlines()[4].endswith('| 0.429 | - |')  # Cohen's log keeps no statistics
    row = dict(zip(*[line.split(',') for line in (tmp_path / 'o.csv').read_text().splitlines()[:2]]))
    assert float(row['noise_accuracy']) == pytest.approx(noise.mean())
