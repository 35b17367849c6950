"""A checkpoint in checkpoints/ certifies to the numbers checkpoints/README.md lists for it."""
import os
import re

import pytest
import scipy.io as sio

import main
from conftest import ROOT
from rs.stats import acr, certified_accuracy


def listed(file, n):
    """The README's (accuracies at 0, 0.25, 0.5, 0.75; ACR) for `file` certified with N = n."""
    rows = open(os.path.join(ROOT, 'checkpoints', 'README.md')).read().splitlines()
    current = None
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        if len(cells) != 7:
            continue
        if cells[0]:
            current = cells[0].strip('`')
        if current == file and cells[4] == str(n):
            return [float(v) for v in re.split(r'\s*/\s*', cells[5])], float(cells[6])
    raise AssertionError(f'no row for {file} with N = {n}')


def test_the_macer_checkpoint_certifies_to_its_listed_numbers(tmp_path):
    accuracies, expected_acr = listed('digits-macer-0.25.pth', 1000)
    assert main.main(['--task', 'test', '--dataset', 'digits', '--sigma', '0.25', '--start_img', '0', '--num_img',
                      '100', '--skip', '10', '--N', '1000', '--certify_batch', '250', '--mode', 'hard', '--quiet',
                      '--resume_ckpt', os.path.join(ROOT, 'checkpoints', 'digits-macer-0.25.pth'),
                      '--matdir', str(tmp_path), '--name', 'check']) == 0
    radii = sio.loadmat(tmp_path / 'check.mat')['hard'][0]
    # another CPU may flip the odd borderline sample: one image either way, an ACR within 0.01
    assert certified_accuracy(radii, (0.0, 0.25, 0.5, 0.75)) == pytest.approx(accuracies, abs=0.011)
    assert acr(radii) == pytest.approx(expected_acr, abs=0.01)
