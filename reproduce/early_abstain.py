"""The saving of early abstention (`--early_abstain M`), measured: REPRODUCE.md, "Early abstention, measured".

    python reproduce/early_abstain.py                  # about 30 minutes on two CPU cores; resumes when rerun

For the three shipped checkpoints and a deliberately weak model, at sigma 0.25 and 0.50, certifies the
same 100 digits test images (0, 10, ..., 990; N0 100, N 10000, alpha 0.001, seed 0, hard mode) with the
standard protocol and with M = 100 and M = 1000, and prints per setting: the abstentions of the standard
protocol, the images the early test abstained on, the share of samples saved, and the images whose
result differs from the standard protocol at the same seed (a difference can only be an image the early
test abstained on that the standard protocol certified: docs/METHOD.md, "Early abstention").

The weak model is built, not trained: a LeNet whose 20 first-layer filters are checkerboards with random
signs (they answer to pixel noise, hardly to the smooth strokes of the digits), the rest random, no biases.
Its answers follow the noise, so under noise they spread over the classes and it abstains on many images,
often with a top class far below 1/2: the case early abstention is for. (Trained LeNets on digits answer
one class to most noisy copies even far from their training noise; they abstain seldom.)
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from rs.results import read_result_json  # noqa: E402

OUT = os.environ.get('EARLY_DIR', os.path.join(ROOT, 'runs', 'early'))
IMAGES = ['--dataset', 'digits', '--start_img', '0', '--num_img', '100', '--skip', '10', '--N0', '100', '--N', '10000',
          '--certify_batch', '1000', '--mode', 'hard', '--quiet']
MODELS = {'gaussian': 'checkpoints/digits-gaussian-0.25.pth', 'macer': 'checkpoints/digits-macer-0.25.pth',
          'smoothadv': 'checkpoints/digits-smoothadv-0.25.pth', 'weak': os.path.join(OUT, 'weak.pth')}


def weak_model(path):
    """A LeNet that reads the noise rather than the digit: many abstentions, made the same way each time."""
    import torch
    sys.path.insert(0, ROOT)
    from model import LeNet
    torch.manual_seed(0)
    net = LeNet()
    with torch.no_grad():
        i = torch.arange(5)
        checkerboard = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()
        for k in range(net.conv1.weight.shape[0]):
            net.conv1.weight[k, 0] = checkerboard * torch.sign(torch.randn(5, 5))
        for layer in (net.conv1, net.conv2, net.fc1, net.fc2):
            layer.bias.zero_()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({'net': net.state_dict(), 'epoch': 0}, path)


def certify(model, sigma, m):
    name = f'{model}-{sigma}-M{m}'
    if not os.path.exists(os.path.join(OUT, name + '.mat')):
        subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), '--task', 'test', *IMAGES, '--sigma', sigma,
                        '--resume_ckpt', MODELS[model], '--matdir', OUT, '--name', name, '--early_abstain', str(m)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    record = read_result_json(os.path.join(OUT, name + '.json'), 'move it away and rerun')
    if record is None:
        sys.exit(f'error: {os.path.join(OUT, name + ".json")} is not a result of this tool; move it away and rerun')
    with open(os.path.join(OUT, name + '.hard.tsv')) as f:
        rows = [line.split('\t')[:5] for line in f.read().splitlines()[1:]]
    return record, rows


def main():
    if not os.path.exists(MODELS['weak']):
        weak_model(MODELS['weak'])
    print('| model | sigma | M | abstained (standard) | abstained early | samples drawn | saved | images that differ |')
    print('|---|---|---|---|---|---|---|---|')
    for model in MODELS:
        for sigma in ('0.25', '0.50'):
            _, standard = certify(model, sigma, 0)
            abstained = sum(r[2] == '-1' for r in standard)
            for m in (100, 1000):
                record, rows = certify(model, sigma, m)
                drawn = record['samples']['per_image']
                early = sum(d < 100 + m + 10000 for d in drawn)
                differ = sum(a != b for a, b in zip(standard, rows))
                print(f'| {model} | {sigma} | {m} | {abstained} | {early} | {sum(drawn)} of {100 * 10100} | '
                      f'{100 * record["samples"]["saved"]:.1f}% | {differ} |', flush=True)


if __name__ == '__main__':
    main()
