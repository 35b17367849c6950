"""The documents agree with each other and with the code; the help says each thing once."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_main
from plumbing.records import VERSION
from presets import PRESETS


def test_one_version_everywhere():
    r = run_main('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'macer {VERSION}'
    assert re.search(rf'^version: {re.escape(VERSION)}$', open(os.path.join(ROOT, 'CITATION.cff')).read(), re.M)
    changelog = open(os.path.join(ROOT, 'CHANGELOG.md')).read()
    assert re.search(r'^## \[?([\d.]+)', changelog, re.M).group(1) == VERSION


def help_blocks(text):
    """{option: its help text} from argparse's --help output."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r'^  (-[-\w]+)', line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith('    '):
            blocks[current] += ' ' + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize('command', [['main.py'], ['visualize/plotcurves.py'], ['visualize/trainingcurves.py'],
                                     ['visualize/recompute.py'], ['visualize/compare.py'], ['visualize/leaderboard.py'],
                                     ['visualize/merge.py'], ['bench/bench.py'], ['bench/sequential.py']])
def test_help_gives_each_default_once_and_none_for_required_flags(command):
    r = subprocess.run([sys.executable, *command, '--help'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0
    blocks = help_blocks(r.stdout)
    assert blocks
    for option, text in blocks.items():
        assert text.count('(default:') <= 1, text
        assert '(default: None)' not in text and '(default: False)' not in text, text
    if command == ['main.py']:
        for name in PRESETS:  # listed once, in --preset's help, not again in the usage line
            assert len(re.findall(rf'(?<![\w.-]){re.escape(name)}(?![\w.-])', r.stdout)) == 1, name
    if 'plotcurves' in command[0]:
        assert '(default' not in blocks['--out']


def test_no_document_cites_a_file_that_is_not_in_the_repository():
    tracked = subprocess.run(['git', 'ls-files'], capture_output=True, text=True, cwd=ROOT).stdout.split()
    documents = [p for p in tracked if p.endswith(('.md', '.py', '.sh', '.m', '.cff'))]
    missing = []
    OUTSIDE_DOCUMENT = 'PAPER' + '.md'  # the development notes outside the repository (spelt so this file passes)
    for path in documents:
        text = open(os.path.join(ROOT, path), encoding='utf-8').read()
        assert OUTSIDE_DOCUMENT not in text or path == 'CHANGELOG.md', path
        for link in re.findall(r'\]\(([^)#\s]+)', text) if path.endswith('.md') else []:  # links to repository files
            if '://' in link:
                continue
            target = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), link))
            if not os.path.exists(target):
                missing.append(f'{path}: {link}')
        for cited in re.findall(r'\b((?:docs|reproduce|visualize|bench|tests|checkpoints)/[\w./-]+\.(?:md|py|sh|m|tsv)(?:\.gz)?)',
                                text):
            if not os.path.exists(os.path.join(ROOT, cited)):
                missing.append(f'{path}: {cited}')
    assert not missing, missing


def test_the_documented_largest_radii_are_what_the_tool_computes():
    from rs.stats import largest_radius
    readme = open(os.path.join(ROOT, 'checkpoints', 'README.md')).read()
    assert f'{largest_radius(0.25, 1000, 0.001):.3f}' == '0.616' and '0.616 with N = 1000' in readme
    assert f'{largest_radius(0.25, 10000, 0.001):.2f}' == '0.80' and '0.80' in readme
    method = open(os.path.join(ROOT, 'docs', 'METHOD.md')).read()
    for n, text in ((10000, '0.80 at sigma 0.25 with\n`n = 10000`'), (200, '0.46 with `n = 200`')):
        assert text in method, text
    assert f'{largest_radius(0.25, 200, 0.001):.2f}' == '0.46'


def test_the_benchmark_runs_a_row_and_records_where_it_ran(tmp_path):
    """Not a timing test: one small row of bench/bench.py runs, prints its figure and writes the JSON."""
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'bench.py'), '--models', 'lenet', '--what',
                        'certify', '--settings', 'cl', '--repeats', '1', '--warmup', '0', '--certify_batch', '100',
                        '--json', str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'timing row 1/1: lenet certify cl' in r.stderr and 'noisy samples/s' in r.stdout
    result = json.loads(out.read_text())
    row, = result['rows']
    assert (row['model'], row['what'], row['setting'], row['unit']) == ('lenet', 'certify', 'cl', 'noisy samples/s')
    assert row['value'] > 0 and row['vs_forward'] > 0
    assert result['info']['device'] == 'cpu' and result['info']['device_name']


def test_the_sequential_benchmark_pairs_the_two_runs(tmp_path):
    """Not a timing test: bench/sequential.py on three images prints the paired table and writes the JSON."""
    out = tmp_path / 'seq.json'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'sequential.py'), '--settings', 'macer',
                        '--num_img', '3', '--N', '300', '--N0', '50', '--skip', '17', '--json', str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'samples per image: fixed 350, sequential' in r.stdout and '| 0.75 |' in r.stdout
    m, = json.loads(out.read_text())['settings']
    assert m['images'] == 3 and m['samples_per_image']['fixed'] == 350
    assert 0 < m['samples_per_image']['sequential'] <= 350 and [c['radius'] for c in m['radii']] == [0, 0.25, 0.5,
                                                                                                      0.75, 1.0]
