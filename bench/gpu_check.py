"""The GPU acceptance check: one command, one line per check, a summary; within 8 minutes on one GPU.

    bash bench/gpu_check.sh                 # on a CUDA machine (what the suite cannot run)
    python bench/gpu_check.py --device cpu --quick   # the same checks, tiny, on CPU (the suite runs parts)

Checks (each line: PASS / FAIL / SKIP, its name, what was measured):
- fp32-is-ieee: `--precision fp32` runs IEEE fp32 (ResNet-110 logits against a float64 reference on one
  batch; TF32 would be off by about 1e-3 relative), and what tf32 gives, for contrast;
- resume-exact: MACER training of ResNet-110 on Cifar-shaped synthetic images (random crops and flips,
  2 loader workers), `--deterministic`: 2 epochs straight equal 1 epoch, a stop, and a resume, bit for bit
  (weights and BatchNorm buffers);
- certify-bf16 / certify-fp32: certification of that model runs, its rows are finite, its JSON records
  the GPU model and the precision;
- fp16-smoothadv: fp16 training (gradient scaler) with the SmoothAdv attack: finite, non-zero gradients
  and the number of attack directions replaced for want of a gradient;
- compile: `torch.compile` runs and agrees with eager;
- speed-train / speed-certify: images per second of a MACER step (ResNet-110, batch 64, k 16) with the
  projected Cifar-10 epoch beside the paper's 504 s (P100), noisy samples per second of certification
  (ResNet-110, N = 100000 per image) with the seconds per image beside the paper's 15 s (GTX 1080 Ti).

Training and certification run through `main.py` itself, in processes of their own (a stop is a real
stop); `_main` is that entry with the Cifar-10 reader swapped for `SyntheticImages`, since Cifar-10 cannot
be downloaded on a machine without network.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

CIFAR_TRAIN_EPOCH = 50000  # images in a Cifar-10 training epoch
PAPER_EPOCH_S = 504.0      # MACER paper, Table 4: Cifar-10 seconds per epoch on a P100 (sigma 0.25, k 16)
PAPER_CERTIFY_S = 15.0     # the paper: seconds per certified Cifar-10 image (N 100000) on a GTX 1080 Ti


class SyntheticImages(Dataset):
    """Cifar-shaped images made from a seed (uint8, 32x32x3; label i mod 10), read as Cifar-10 is: a PIL image
    through the data set's own transform (random crop and flip for training)."""

    def __init__(self, n, split, seed=0):
        from data import transforms_for
        rng = np.random.RandomState(seed + (0 if split == 'train' else 1))
        self.pixels = rng.randint(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]
        self.transform = transforms_for('cifar10', split)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.pixels[i])), self.targets[i]


def synthetic_main(argv, n_train, n_test):
    """main.py with `--dataset cifar10` read from `SyntheticImages` (every other data set as usual)."""
    import evaluate
    import data
    import main
    import train
    real = data.get_dataset

    def get_dataset(dataset, root, split, download=True):
        if dataset == 'cifar10':
            return SyntheticImages(n_train if split == 'train' else n_test, split)
        return real(dataset, root, split, download)
    for module in (data, train, evaluate):
        if hasattr(module, 'get_dataset'):
            module.get_dataset = get_dataset
    return main.main(argv)


class Report:
    def __init__(self):
        self.lines = []

    def add(self, status, name, detail):
        line = f'{status:4}  {name:16}  {detail}'
        self.lines.append((status, line))
        print(line, flush=True)

    def summary(self):
        counts = {s: sum(1 for st, _ in self.lines if st == s) for s in ('PASS', 'FAIL', 'SKIP')}
        return f'{counts["PASS"]} passed, {counts["FAIL"]} failed, {counts["SKIP"]} skipped'


def relative_error(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def check_fp32(device, arch='resnet110', batch=32):
    """(error of fp32, error of tf32) of the logits against float64, on one batch of random inputs."""
    from model import ARCH_INPUT, build_model
    from plumbing.devices import Runner, speed_settings
    torch.manual_seed(0)
    net = build_model(arch, 10).to(device).eval()
    x = torch.rand(batch, *ARCH_INPUT[arch], device=device)
    with torch.no_grad():
        reference = build_model(arch, 10).to(device).double().eval()
        reference.load_state_dict(net.state_dict())
        exact = reference(x.double())
        errors = {}
        for precision in ('fp32', 'tf32'):
            speed_settings(device, precision)
            errors[precision] = relative_error(Runner(net, device, 'fp32' if precision == 'fp32' else 'tf32')(x),
                                               exact)
    speed_settings(device, 'fp32')
    return errors['fp32'], errors['tf32']


def run_main(args, workdir, n_train, n_test, timeout):
    """`_main` in a process of its own; returns (exit status, output)."""
    cmd = [sys.executable, os.path.abspath(__file__), '_main', str(n_train), str(n_test), '--', *map(str, args)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def states_equal(a, b):
    sa = torch.load(a, map_location='cpu', weights_only=True)['net']
    sb = torch.load(b, map_location='cpu', weights_only=True)['net']
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    return not differ and set(sa) == set(sb), differ


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['_main']:  # the entry of the child processes: _main N_TRAIN N_TEST -- MAIN.PY ARGS
        return synthetic_main(argv[4:], int(argv[1]), int(argv[2]))
    p = argparse.ArgumentParser(description='GPU acceptance check of macer (see the module docstring).')
    p.add_argument('--device', default='cuda')
    p.add_argument('--quick', action='store_true', help='tiny sizes (the suite\'s CPU run of the same code)')
    p.add_argument('--keep', default=None, help='folder for the runs (default: a temporary folder)')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: CUDA is not available on this machine: this script checks the GPU paths', file=sys.stderr)
        return 2
    q = args.quick
    report = Report()
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'macer GPU check: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, '
          f'{"quick" if q else "full"} sizes', flush=True)
    work = args.keep or tempfile.mkdtemp(prefix='macer-gpu-check-')
    t_start = time.time()

    # --- fp32 is IEEE fp32 ---------------------------------------------------------------------------
    try:
        e32, e_tf32 = check_fp32(device, 'lenet' if q else 'resnet110', 8 if q else 32)
        report.add('PASS' if e32 < 1e-4 else 'FAIL', 'fp32-is-ieee',
                   f'max relative error of the logits against float64: fp32 {e32:.2e} (limit 1e-4), tf32 {e_tf32:.2e}')
    except Exception as e:  # one failed check must not hide the others
        report.add('FAIL', 'fp32-is-ieee', f'{type(e).__name__}: {e}')

    # --- exact resume with --deterministic -----------------------------------------------------------
    n_train, n_test = (16, 4) if q else (256, 8)
    common = ['--task', 'train', '--dataset', 'cifar10', '--arch', 'resnet110',
              '--method', 'macer', '--batch_size', '8' if q else '64', '--gauss_num', '2' if q else '16',
              '--workers', '2', '--lr', '0.01', '--cert_from', '1000', '--start_img', '0', '--num_img', '2', '--quiet',
              '--deterministic', '--device', args.device, '--seed', '0']
    straight, parted = os.path.join(work, 'straight'), os.path.join(work, 'parted')
    try:
        t0 = time.time()
        s1, o1 = run_main(common + ['--epochs', '2', '--ckptdir', straight], work, n_train, n_test, 900)
        s2, o2 = run_main(common + ['--epochs', '1', '--ckptdir', parted], work, n_train, n_test, 900)
        s3, o3 = run_main(common + ['--epochs', '2', '--ckptdir', parted, '--resume_ckpt',
                                    os.path.join(parted, 'latest.pth')], work, n_train, n_test, 900)
        if (s1, s2, s3) != (0, 0, 0):
            failed = next(o for s, o in ((s1, o1), (s2, o2), (s3, o3)) if s)
            report.add('FAIL', 'resume-exact', f'a training run failed: {failed.strip().splitlines()[-1:]}')
        else:
            same, differ = states_equal(os.path.join(straight, 'latest.pth'), os.path.join(parted, 'latest.pth'))
            report.add('PASS' if same else 'FAIL', 'resume-exact',
                       f'MACER ResNet-110, 2 epochs of {n_train} synthetic images, 2 workers, --deterministic: '
                       + ('straight == stopped and resumed, every weight and buffer' if same else
                          f'{len(differ)} tensors differ (first {differ[0]})') + f' ({time.time() - t0:.0f} s)')
    except Exception as e:
        report.add('FAIL', 'resume-exact', f'{type(e).__name__}: {e}')

    # --- certification in bf16 and fp32, with the GPU in its identity ---------------------------------
    ckpt = os.path.join(straight, 'latest.pth')
    for precision in ('bf16', 'fp32'):
        name = f'certify-{precision}'
        if not os.path.exists(ckpt):
            report.add('SKIP', name, 'no model: the training check failed')
            continue
        try:
            matdir = os.path.join(work, f'mat-{precision}')
            status, out = run_main(['--task', 'test', '--dataset', 'cifar10', '--resume_ckpt', ckpt, '--start_img', '0',
                                    '--num_img', '2', '--N0', '20', '--N', '200', '--certify_batch', '100',
                                    '--precision', precision, '--device', args.device, '--matdir', matdir, '--quiet'],
                                   work, n_train, n_test, 600)
            if status:
                report.add('FAIL', name, f'exit {status}: {out.strip().splitlines()[-1:]}')
                continue
            from rs.results import read_result_json
            record = read_result_json(glob.glob(os.path.join(matdir, '*.json'))[0], 'rerun the check')
            identity = record['identity']
            finite = all(np.isfinite(v) for v in record['summary']['hard']['accuracy'])
            want_gpu = device.type != 'cuda' or bool(identity.get('gpu'))
            ok = finite and want_gpu and identity['precision'] == precision and record['status'] == 'complete'
            report.add('PASS' if ok else 'FAIL', name,
                       f'complete, precision {identity["precision"]}, gpu {identity.get("gpu")!r}, ACR '
                       f'{record["summary"]["hard"]["acr"]:.3f}')
        except Exception as e:
            report.add('FAIL', name, f'{type(e).__name__}: {e}')

    # --- fp16 with the gradient scaler and the SmoothAdv attack ---------------------------------------
    if device.type != 'cuda':
        report.add('SKIP', 'fp16-smoothadv', 'fp16 runs on CUDA only')
    else:
        try:
            folder = os.path.join(work, 'fp16')
            status, out = run_main(['--task', 'train', '--dataset', 'cifar10', '--method', 'smoothadv',
                                    '--precision', 'fp16', '--batch_size', '64', '--num_noise_vec', '2', '--epochs', '1',
                                    '--workers', '2', '--cert_from', '1000', '--start_img', '0', '--num_img', '2',
                                    '--quiet', '--ckptdir', folder,
                                    '--device', args.device], work, n_train, n_test, 900)
            if status:
                report.add('FAIL', 'fp16-smoothadv', f'exit {status}: {out.strip().splitlines()[-1:]}')
            else:
                entry = json.loads(open(os.path.join(folder, 'log.jsonl')).read().splitlines()[-1])
                norm = entry.get('grad_norm')
                replaced = entry.get('random_directions', 'not logged')
                ok = isinstance(norm, (int, float)) and np.isfinite(norm) and norm > 0
                report.add('PASS' if ok else 'FAIL', 'fp16-smoothadv',
                           f'gradient norm {norm}, steps skipped by the scaler {entry.get("skipped_steps", "?")}, '
                           f'attack directions replaced (zero gradient) {replaced}')
        except Exception as e:
            report.add('FAIL', 'fp16-smoothadv', f'{type(e).__name__}: {e}')

    # --- torch.compile ------------------------------------------------------------------------------
    try:
        from model import build_model
        from plumbing.devices import Runner
        torch.manual_seed(0)
        net = build_model('lenet', 10).to(device).eval()
        x = torch.rand(64, 1, 28, 28, device=device)
        with torch.no_grad():
            eager = Runner(net, device)(x)
            t0 = time.time()
            compiled = Runner(net, device, compile=True)(x)
        err = relative_error(compiled, eager)
        report.add('PASS' if err < 1e-4 else 'FAIL', 'compile',
                   f'LeNet compiled in {time.time() - t0:.0f} s; relative difference to eager {err:.1e}')
    except Exception as e:
        report.add('FAIL', 'compile', f'{type(e).__name__}: {e}')

    # --- throughput ---------------------------------------------------------------------------------
    try:
        img_s = train_throughput(device, batch=8 if q else 64, k=2 if q else 16, steps=2 if q else 20)
        report.add('PASS', 'speed-train',
                   f'MACER step, ResNet-110, batch {8 if q else 64}, k {2 if q else 16}, fp32: {img_s:.0f} images/s '
                   f'({img_s * (2 if q else 16):.0f} noisy/s); a Cifar-10 epoch {CIFAR_TRAIN_EPOCH / img_s:.0f} s '
                   f'(the paper: {PAPER_EPOCH_S:.0f} s on a P100)')
    except Exception as e:
        report.add('FAIL', 'speed-train', f'{type(e).__name__}: {e}')
    try:
        n = 2000 if q else 100000
        samples_s = certify_throughput(device, n=n, batch=500 if q else 1000)
        report.add('PASS', 'speed-certify',
                   f'ResNet-110, fp32, N0 100 + N {n}: {samples_s:.0f} noisy samples/s; {100100 / samples_s:.1f} s '
                   f'per certified image at N 100000 (the paper: {PAPER_CERTIFY_S:.0f} s on a GTX 1080 Ti)')
    except Exception as e:
        report.add('FAIL', 'speed-certify', f'{type(e).__name__}: {e}')

    print(f'summary: {report.summary()} in {time.time() - t_start:.0f} s (runs in {work})', flush=True)
    return 1 if any(s == 'FAIL' for s, _ in report.lines) else 0


def train_throughput(device, batch, k, steps, arch='resnet110', warmup=3):
    """Distinct images per second of MACER training steps (`arch`, fp32, channels_last), after `warmup` steps."""
    from model import ARCH_INPUT, build_model
    from plumbing.devices import Runner, speed_settings
    from train import optimizer_step, step_setup, training_step
    speed_settings(device, 'fp32')
    torch.manual_seed(0)
    net = build_model(arch, 10).to(device)
    runner = Runner(net, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step = step_setup('macer', 0.25, gauss_num=k, lbd=12.0)
    x, y = torch.rand(batch, *ARCH_INPUT[arch], device=device), torch.randint(0, 10, (batch,), device=device)
    runner.train()

    def one():
        loss = training_step(runner, x, y, *step).loss
        optimizer_step(optimizer, scaler, loss)
    for _ in range(warmup):
        one()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def certify_throughput(device, n, batch):
    """Noisy samples per second of `Smooth.certify` on one image (ResNet-110, fp32), after a warm-up image."""
    from model import build_model
    from rs.core import Smooth, image_generator
    from plumbing.devices import Runner
    torch.manual_seed(0)
    runner = Runner(build_model('resnet110', 10).to(device).eval(), device)
    smooth = Smooth(runner, 10, 0.25, device, 'hard')
    x = torch.rand(3, 32, 32)
    smooth.certify(x, 100, batch, 0.001, batch, image_generator(0, 0, device))
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    smooth.certify(x, 100, n, 0.001, batch, image_generator(0, 1, device))
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (100 + n) / (time.perf_counter() - t0)


if __name__ == '__main__':
    sys.exit(main())
