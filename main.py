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
momentum_type = _number(float, 0.0, 1.0, high_open=True, what='a number in [0, 1)')


def radius_type(text):
    """An L2 radius in pixel units of [0, 1] images; `A/B` is accepted, so Salman et al.'s 1/256 units
    read as they are written there (their `--epsilon 64` is `--epsilon 64/256` = 0.25 here)."""
    top, slash, bottom = text.partition('/')
    if slash:
        value = nonneg_float(top) / positive_float(bottom)
    else:
        value = nonneg_float(text)
    return value


def build_parser():
    from data import DATASETS
    from model import ARCHS
    from rs.core import MODES
    p = Parser(description='MACER (Zhai et al., ICLR 2020): train and certify L2-robust classifiers with '
                           'randomized smoothing.', formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from presets import PRESETS
    from runtime import MEMORY_FORMATS, PRECISIONS
    from train import METHODS
    p.add_argument('--task', default='train', choices=('train', 'test'), help='train a model, or certify a checkpoint')
    p.add_argument('--preset', default=None, choices=sorted(PRESETS),
                   help='a training row of the paper by name (PAPER.md sections 4, 5, 7): sets the defaults of its '
                        'flags; flags given on the command line win. See presets.py')
    p.add_argument('--dataset', default='cifar10', choices=DATASETS,
                   help='data set; `digits` is embedded (no download, no --root)')
    p.add_argument('--root', default='data', help='data set folder, in torchvision\'s layout (ImageNet: ROOT/train, ROOT/val)')
    p.add_argument('--no_download', action='store_true', help='never try to download a missing data set')
    p.add_argument('--arch', default=None, choices=ARCHS,
                   help='architecture (default: lenet for mnist/digits, resnet110 for cifar10/svhn, resnet50 for imagenet)')
    p.add_argument('--resume_ckpt', default=NONE,
                   help='checkpoint to certify (test) or to resume from (train); with --task train, `auto` resumes '
                        'from --ckptdir/latest.pth when it exists and starts afresh otherwise')
    p.add_argument('--ckptdir', default=NONE, help='folder for checkpoints')
    p.add_argument('--matdir', default=NONE,
                   help='folder for result files: NAME.mat, NAME.{hard,soft}.tsv logs and NAME.json')
    p.add_argument('--device', default='auto', help='auto (CUDA when present, else CPU), cpu, cuda or cuda:N')
    p.add_argument('--precision', default='fp32', choices=PRECISIONS,
                   help='arithmetic of the network: fp32 (the paper\'s), bf16 (autocast, CPU and CUDA) or fp16 '
                        '(autocast with a gradient scaler, CUDA). Lower precision is faster; its certificates hold '
                        'for the network as run in that precision')
    p.add_argument('--memory_format', default='channels_last', choices=MEMORY_FORMATS,
                   help='tensor layout of the network: channels_last (faster on CPU and CUDA; same arithmetic up to '
                        'the order of summation) or contiguous (the public code\'s)')
    p.add_argument('--compile', action='store_true',
                   help='torch.compile the network: faster steps after a compilation of a minute or more')
    p.add_argument('--seed', default=0, type=nonneg_int,
                   help='seed of all randomness; certification noise of test image i comes from (seed, i)')
    p.add_argument('--quiet', action='store_true', help='no progress bars (log lines and summaries still print)')

    g = p.add_argument_group('training')
    g.add_argument('--method', default='macer', choices=METHODS,
                   help='macer (Zhai et al.), gaussian (Cohen et al.: noise augmentation) or smoothadv (Salman et al.)')
    g.add_argument('--epochs', default=440, type=positive_int, help='number of training epochs')
    g.add_argument('--batch_size', default=64, type=positive_int,
                   help='distinct images per optimiser step (each is used in k or m noisy copies)')
    g.add_argument('--gauss_num', default=None, type=positive_int,
                   help='k, noisy copies per image: default 16 for macer, 1 for gaussian')
    g.add_argument('--lr', default=0.01, type=positive_float, help='initial learning rate of SGD')
    g.add_argument('--momentum', default=0.9, type=momentum_type, help='SGD momentum')
    g.add_argument('--weight_decay', default=5e-4, type=nonneg_float, help='SGD weight decay')
    g.add_argument('--lr_milestones', default=[200, 400], type=positive_int, nargs='*',
                   help='epochs after which the learning rate is multiplied by --lr_factor (the public code drops it '
                        'one epoch earlier)')
    g.add_argument('--lr_factor', default=0.1, type=positive_float, help='learning-rate multiplier at each milestone')
    g.add_argument('--lbd', default=12.0, type=nonneg_float, help='lambda, weight of the MACER robustness loss')
    g.add_argument('--lbd_after', default=0, type=nonneg_int,
                   help='lambda is 0 for the first LBD_AFTER epochs, then --lbd (the "dynamic" lambda of sigma 1.00: '
                        'the first lr milestone)')
    g.add_argument('--gamma', default=8.0, type=positive_float, help='MACER hinge on xi (radius sigma * gamma / 2)')
    g.add_argument('--num_noise_vec', default=1, type=positive_int,
                   help='SmoothAdv: m, noise draws per image shared by the attack and the training step')
    g.add_argument('--epsilon', default=0.25, type=radius_type,
                   help='SmoothAdv: L2 radius of the attack in pixel units of [0, 1] images; A/B is accepted '
                        '(Salman et al. give it in 1/256 units: their 64 is 64/256 = 0.25)')
    g.add_argument('--num_steps', default=10, type=positive_int, help='SmoothAdv: PGD steps T')
    g.add_argument('--warmup', default=1, type=positive_int,
                   help='SmoothAdv: epochs over which epsilon grows linearly to --epsilon')
    g.add_argument('--normalize', action='store_true',
                   help="put Cohen's input normalisation (cifar10 or imagenet statistics) in front of the model, "
                        "as Cohen's and Salman's models; MACER models have none")
    g.add_argument('--workers', default=None, type=nonneg_int,
                   help='data-loading processes (default: 0 for digits, 4 otherwise)')
    g.add_argument('--save_every', default=1, type=positive_int,
                   help='write --ckptdir/latest.pth every SAVE_EVERY epochs (and at the last and certified epochs)')
    g.add_argument('--cert_from', default=200, type=positive_int,
                   help='certify (hard mode, into --matdir) after epoch CERT_FROM ...')
    g.add_argument('--cert_every', default=20, type=positive_int, help='... and every CERT_EVERY epochs after it')

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
                   help='--task test: name of the result files in --matdir (default: the checkpoint\'s epoch, as '
                        'the original); certifications during training are named by their epoch')
    return p


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


def resolve(args):
    """Fill the defaults that depend on other flags and check what single flags cannot."""
    from common import UsageError, writable_dir
    from model import DEFAULT_ARCH, NORMALIZATION
    args.resume_ckpt, args.ckptdir, args.matdir = given(args.resume_ckpt), given(args.ckptdir), given(args.matdir)
    args.arch = args.arch or DEFAULT_ARCH[args.dataset]
    check_fit(args.arch, args.dataset)
    if args.gauss_num is None:
        args.gauss_num = 16 if args.method == 'macer' else 1
    if args.workers is None:
        args.workers = 0 if args.dataset == 'digits' else 4
    if args.mode is None:
        args.mode = 'both' if args.task == 'test' else 'hard'
    if args.normalize and args.dataset not in NORMALIZATION:
        raise UsageError(f'--normalize: there are no normalisation statistics for {args.dataset} '
                         f'(only {", ".join(NORMALIZATION)}); leave --normalize out')
    if args.lr_milestones != sorted(set(args.lr_milestones)):
        raise UsageError(f'--lr_milestones {" ".join(map(str, args.lr_milestones))} must increase strictly')
    for flag in ('ckptdir', 'matdir'):
        if getattr(args, flag) is not None:
            writable_dir(getattr(args, flag), f'--{flag}')
    return args


def run_test(args, device, dist):
    """`--task test`: certify a checkpoint on the chosen test images (PAPER.md section 6)."""
    from checkpoint import fit_model, read_checkpoint
    from common import UsageError
    from data import NUM_CLASSES

    if args.resume_ckpt in (None, 'auto'):
        raise UsageError('--task test certifies a checkpoint: give it with --resume_ckpt FILE')
    ckpt = read_checkpoint(args.resume_ckpt)
    why = f'--arch {args.arch}' if args.arch_given else f'--dataset {args.dataset}'
    model = fit_model(ckpt, args.arch, NUM_CLASSES[args.dataset], why).to(device).eval()
    runner = make_runner(model, args, device)
    certifier = Certifier(args, device, dist)
    name = args.name if args.name is not None else ckpt.epoch
    dist.print(f'==> certifying {args.resume_ckpt} ({ckpt.kind} checkpoint, epoch {ckpt.epoch}, {args.arch}'
               f'{", normalised inputs" if ckpt.normalization else ""}) on {len(certifier.indices)} {args.dataset} '
               f'test images, sigma {args.sigma}, N0 {args.N0}, N {args.N}, alpha {args.alpha}, mode {args.mode}, '
               f'device {device}', flush=True)
    certifier(model, runner, name, extra={'checkpoint_kind': ckpt.kind, 'checkpoint_epoch': ckpt.epoch,
                                          'normalization': ckpt.normalization})


def make_runner(model, args, device, dist=None):
    from runtime import Runner
    return Runner(model, device, args.precision, args.memory_format, args.compile, dist)


class Certifier:
    """`--task test`'s certification with the arguments of this run, for any model and result name.

    The test set and the image indices are checked when it is made, so a training run with a bad
    certification flag stops before its first epoch, not after it.
    """

    def __init__(self, args, device, dist):
        from data import get_dataset
        self.args, self.device, self.dist = args, device, dist
        self.dataset = get_dataset(args.dataset, args.root, 'test', download=not args.no_download)
        self.indices = test_indices(len(self.dataset), args.start_img, args.num_img, args.skip, args.dataset)

    def __call__(self, model, runner, name, extra=None):
        """Certify `runner` (the network as run) and name the results; `model` holds its weights."""
        from data import NUM_CLASSES
        from rs.certify import ResultFiles, certification_identity, certify_dataset, modes_of, print_summary
        a = self.args
        files = ResultFiles(a.matdir, name, modes_of(a.mode)) if a.matdir is not None else None
        record = dict(vars(a), command=sys.argv, **(extra or {}))
        radii = certify_dataset(runner, self.dataset, self.indices, num_classes=NUM_CLASSES[a.dataset],
                                sigma=a.sigma, mode=a.mode, beta=a.beta, N0=a.N0, N=a.N, alpha=a.alpha,
                                batch=a.certify_batch, seed=a.seed, device=self.device, files=files,
                                identity=certification_identity(a, model, a.mode, self.device), record=record,
                                progress=not a.quiet, dist=self.dist)
        if not self.dist.is_main:
            return radii
        print_summary(radii)
        if files is not None:
            print(f'==> results: {files.mat}, {", ".join(files.logs.values())}, {files.json}', flush=True)
        return radii


def run_train(args, device, dist):
    """`--task train`: train with --method, certifying on the schedule when --matdir is given."""
    from train import run_training
    certifier = Certifier(args, device, dist) if args.matdir is not None else None

    def certify_epoch(model, runner, epoch):
        if certifier is not None:
            dist.print(f'==> certifying epoch {epoch} (hard mode, {len(certifier.indices)} test images, N {args.N})',
                       flush=True)
            certifier(model, runner, epoch, extra={'epoch': epoch})
    run_training(args, device, lambda model: make_runner(model, args, device, dist), certify_epoch, dist)


def parse_args(argv=None):
    """Two passes: the first finds --preset, whose values become defaults for the second."""
    from presets import PRESETS
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.preset is not None:
        parser.set_defaults(**PRESETS[first.preset])
    args = parser.parse_args(argv)
    args.arch_given = args.arch is not None
    return args


def main(argv=None):
    args = parse_args(argv)
    from common import UsageError
    from runtime import Distributed, check_precision, pick_device
    dist = Distributed()
    try:
        # under torchrun (WORLD_SIZE > 1) every process joins the job: Gloo on CPU, NCCL on GPUs
        dist = Distributed.from_environment(args.device)
        resolve(args)
        device = pick_device(args.device, dist)
        check_precision(args.precision, device)
        if device.type == 'cuda':
            # input sizes never change: let cuDNN time its convolution algorithms once and keep the fastest
            import torch
            torch.backends.cudnn.benchmark = True
        if args.task == 'test':
            run_test(args, device, dist)
        else:
            run_train(args, device, dist)
    except UsageError as e:
        print(f'error: {e}' if dist.is_main else f'error (rank {dist.rank}): {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted: rerun the same command to resume', file=sys.stderr)
        return 130
    finally:
        dist.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
