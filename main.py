"""MACER train and test: the single entry point.

    python main.py --task train --dataset cifar10 --root DATA --ckptdir CKPT --matdir MAT --sigma 0.25
    python main.py --task test  --dataset cifar10 --root DATA --resume_ckpt CKPT/440.pth --matdir MAT

The flags of the public MACER code keep their names and meaning. `main()` parses the arguments,
picks the device once, builds data and model, and hands over to training or certification.
A mistake in the input ends with a one-line error and exit status 2.
"""
import argparse
import math
import sys

NONE = 'none'  # the original's spelling of "not given" for paths


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, not argparse's usage block: the message names the flag and the value
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def _number(kind, low=None, high=None, low_open=False, high_open=False, what='a number'):
    """An argparse type: a finite `kind` within the given bounds, else a message naming the range."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}') from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}')
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}')
        return value
    parse.__name__ = kind.__name__
    return parse


positive_float = _number(float, 0.0, low_open=True, what='a positive number')
nonneg_float = _number(float, 0.0, what='a number >= 0')
positive_int = _number(int, 1, what='an integer >= 1')
nonneg_int = _number(int, 0, what='an integer >= 0')
probability = _number(float, 0.0, 1.0, low_open=True, high_open=True, what='a number strictly between 0 and 1')


def build_parser():
    from data import DATASETS
    from model import ARCHS
    from rs.core import MODES
    p = Parser(description='MACER (Zhai et al., ICLR 2020): train and certify L2-robust classifiers with '
                           'randomized smoothing.', formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--task', default='train', choices=('train', 'test'), help='train a model, or certify a checkpoint')
    p.add_argument('--dataset', default='cifar10', choices=DATASETS,
                   help='data set; `digits` is embedded (no download, no --root)')
    p.add_argument('--root', default='data', help='data set folder, in torchvision\'s layout (ImageNet: ROOT/train, ROOT/val)')
    p.add_argument('--no_download', action='store_true', help='never try to download a missing data set')
    p.add_argument('--arch', default=None, choices=ARCHS,
                   help='architecture (default: lenet for mnist/digits, resnet110 for cifar10/svhn, resnet50 for imagenet)')
    p.add_argument('--resume_ckpt', default=NONE, help='checkpoint to certify (test) or to resume from (train)')
    p.add_argument('--ckptdir', default=NONE, help='folder for checkpoints')
    p.add_argument('--matdir', default=NONE,
                   help='folder for result files: NAME.mat, NAME.{hard,soft}.tsv logs and NAME.json')
    p.add_argument('--device', default='auto', help='auto (CUDA when present, else CPU), cpu, cuda or cuda:N')
    p.add_argument('--seed', default=0, type=nonneg_int,
                   help='seed of all randomness; certification noise of test image i comes from (seed, i)')

    g = p.add_argument_group('smoothing (training and certification)')
    g.add_argument('--sigma', default=0.25, type=positive_float, help='standard deviation of the Gaussian noise, in pixel units of [0, 1] images')
    g.add_argument('--beta', default=16.0, type=positive_float, help='inverse temperature of the softmax (MACER loss and soft certification)')

    g = p.add_argument_group('certification')
    g.add_argument('--start_img', default=500, type=nonneg_int, help='index of the first test image')
    g.add_argument('--num_img', default=500, type=positive_int, help='number of test images')
    g.add_argument('--skip', default=1, type=positive_int, help='certify test images start_img, start_img + skip, ...')
    g.add_argument('--N0', default=100, type=positive_int, help='noisy samples that choose the class')
    g.add_argument('--N', default=100000, type=positive_int, help='noisy samples that bound its probability')
    g.add_argument('--alpha', default=0.001, type=probability, help='failure probability of each certificate')
    g.add_argument('--certify_batch', default=1000, type=positive_int, help='noisy samples per forward pass')
    g.add_argument('--mode', default=None, choices=MODES,
                   help='hard (Clopper-Pearson), soft (Bernstein) or both; default: both for --task test, hard during training')
    g.add_argument('--name', default=None,
                   help='name of the result files in --matdir (default: the checkpoint\'s epoch, as the original)')
    return p


def pick_device(spec):
    import torch
    from common import UsageError
    if spec == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f'--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UsageError(f'--device {spec}: CUDA is not available on this machine; use --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f'--device {spec}: this machine has {torch.cuda.device_count()} CUDA devices')
    elif device.type != 'cpu':
        raise UsageError(f'--device {spec}: only cpu and cuda are supported')
    return device


def test_indices(size, start, num, skip, dataset):
    """The test images certified: start, start + skip, ..., num of them, all inside the test set."""
    from common import UsageError
    if start >= size:
        raise UsageError(f'--start_img {start} is past the end of the {dataset} test set ({size} images); '
                         f'choose --start_img below {size}')
    last = start + (num - 1) * skip
    if last >= size:
        fits = (size - 1 - start) // skip + 1
        raise UsageError(f'--start_img {start} --num_img {num} --skip {skip} reaches test image {last}, past the end '
                         f'of the {dataset} test set ({size} images); use --num_img {fits} or less')
    return list(range(start, last + 1, skip))


def check_fit(arch, dataset):
    from common import UsageError
    from data import INPUT_SHAPE
    from model import ARCH_INPUT
    want, have = ARCH_INPUT[arch], INPUT_SHAPE[dataset]
    if want[0] != have[0] or (arch != 'resnet50' and want != have):
        raise UsageError(f'--arch {arch} takes {"x".join(map(str, want))} inputs but {dataset} images are '
                         f'{"x".join(map(str, have))}; leave --arch out to use the architecture of {dataset}')


def given(path):
    return None if path in (None, '', NONE) else path


def run_test(args, device):
    """`--task test`: certify a checkpoint on the chosen test images (PAPER.md section 6)."""
    from checkpoint import fit_model, read_checkpoint, state_digest
    from common import UsageError, writable_dir
    from data import NUM_CLASSES, get_dataset
    from model import DEFAULT_ARCH
    from rs.certify import ResultFiles, certify_dataset, modes_of, print_summary

    if given(args.resume_ckpt) is None:
        raise UsageError('--task test certifies a checkpoint: give it with --resume_ckpt FILE')
    arch = args.arch or DEFAULT_ARCH[args.dataset]
    check_fit(arch, args.dataset)
    ckpt = read_checkpoint(args.resume_ckpt)
    why = f'--arch {args.arch}' if args.arch else f'--dataset {args.dataset}'
    model = fit_model(ckpt, arch, NUM_CLASSES[args.dataset], why).to(device).eval()
    matdir = given(args.matdir)
    if matdir is not None:
        writable_dir(matdir, '--matdir')
    dataset = get_dataset(args.dataset, args.root, 'test', download=not args.no_download)
    indices = test_indices(len(dataset), args.start_img, args.num_img, args.skip, args.dataset)
    mode = args.mode or 'both'
    name = args.name if args.name is not None else ckpt.epoch
    files = ResultFiles(matdir, name, modes_of(mode)) if matdir is not None else None
    identity = certification_identity(args, model, mode, device)
    record = dict(vars(args), task='test', arch=arch, mode=mode, checkpoint_kind=ckpt.kind,
                  checkpoint_epoch=ckpt.epoch, normalization=ckpt.normalization, command=sys.argv)
    print(f'==> certifying {args.resume_ckpt} ({ckpt.kind} checkpoint, epoch {ckpt.epoch}, {arch}'
          f'{", normalised inputs" if ckpt.normalization else ""}) on {len(indices)} {args.dataset} test images, '
          f'sigma {args.sigma}, N0 {args.N0}, N {args.N}, alpha {args.alpha}, mode {mode}, device {device}',
          flush=True)
    radii = certify_dataset(model, dataset, indices, num_classes=NUM_CLASSES[args.dataset], sigma=args.sigma,
                            mode=mode, beta=args.beta, N0=args.N0, N=args.N, alpha=args.alpha,
                            batch=args.certify_batch, seed=args.seed, device=device, files=files,
                            identity=identity, record=record)
    print_summary(radii)
    if files is not None:
        print(f'==> results: {files.mat}, {", ".join(files.logs.values())}, {files.json}')


def certification_identity(args, model, mode, device):
    """What determines a certification's numbers: a resumed run must match all of it."""
    from checkpoint import state_digest
    return {'model_sha256': state_digest(model), 'dataset': args.dataset, 'start_img': args.start_img,
            'num_img': args.num_img, 'skip': args.skip, 'sigma': args.sigma, 'mode': mode, 'beta': args.beta,
            'N0': args.N0, 'N': args.N, 'alpha': args.alpha, 'certify_batch': args.certify_batch,
            'seed': args.seed, 'device': device.type}


def main(argv=None):
    args = build_parser().parse_args(argv)
    from common import UsageError
    try:
        device = pick_device(args.device)
        if args.task == 'test':
            run_test(args, device)
        else:
            raise UsageError('--task train is not available yet')
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted: rerun the same command to resume', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
