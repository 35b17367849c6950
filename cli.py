"""The command line: its flags, the presets, and the defaults that depend on other flags.

`parse_args(argv)` gives the resolved arguments of `main.py`; `record(args)` the part of them that
applies to the run, for checkpoints and result files. Flag values are checked by `plumbing.flagtypes`; what
single flags cannot check, `resolve` does, with one-line errors.
"""
import argparse
import os

from checkpoint import check_fit
from data import DATASETS, IN_MEMORY
from methods import DEFAULT as DEFAULT_METHOD, METHODS, declarations, flag_names, methods_of
from model import ARCHS, DEFAULT_ARCH, INPUT_LAYERS, NORMALIZATION
from plumbing.devices import MEMORY_FORMATS, PRECISIONS
from plumbing.errors import UsageError
from plumbing.files import writable_dir
from plumbing.flagtypes import HelpFormatter, Parser, checked, distance, file_name, momentum_type, nonneg_float, \
    nonneg_int, positive_float, positive_int, radius_type, seed_type, shard_type
from plumbing.records import LATEST, VERSION
from plumbing.torchrun import DEFAULT_DIST_TIMEOUT_H
from presets import PRESETS
from rs.stats import DEFAULT_SIGMA, MODE_CHOICES, check_alpha

NONE = 'none'  # the original's spelling of "not given" for paths

# flags that mean something only for one task: a record (checkpoint, result JSON) keeps only those that applied
# to its run; the training methods' own flags (`methods`) are training flags too, and a record keeps those of its
# method that applied (`methods.base.Method.flags_applying`)
GENERAL_TRAINING_FLAGS = ('method', 'epochs', 'batch_size', 'lr', 'momentum', 'weight_decay', 'lr_milestones',
                          'lr_factor', 'lr_step', 'train_images', 'workers', 'save_every', 'cert_from', 'cert_every',
                          'ckptdir')


def training_flags():
    """Every flag of training alone: the general ones and every method's (read when asked: a method added to the
    table counts)."""
    return GENERAL_TRAINING_FLAGS + tuple(flag_names())


TEST_FLAGS = ('name', 'split', 'radii', 'shard')
# flags of the machinery, not of the computation: a record keeps --deterministic when set, nothing else
PLUMBING_FLAGS = ('deterministic', 'dist_timeout')


def _shown(value):
    return f'{value:g}' if isinstance(value, float) else 'off' if value is False else str(value)


def method_flag_help(flag):
    """The help of a flag of the methods (`methods.declarations`): each method's meaning and default, once."""
    parts = []
    for method, param in declarations(flag).items():
        default = '' if param.default is None else f' (default {_shown(param.default)})'
        parts.append(f'{method}: {param.help}{default}')
    return '; '.join(parts)


def add_method_flags(group):
    """Every flag of every method, once: its type from its declarations (which must agree), default None (a
    method's own default is filled in by `resolve`), its help naming each method's meaning and default."""
    for flag in flag_names():
        params = list(declarations(flag).values())
        kinds = {(p.type, p.metavar) for p in params}
        assert len(kinds) == 1, f'the methods declare --{flag} with other types'
        kind, metavar = kinds.pop()
        if kind is None:
            group.add_argument(f'--{flag}', action='store_true', default=None, help=method_flag_help(flag))
        else:
            group.add_argument(f'--{flag}', default=None, type=kind, metavar=metavar, help=method_flag_help(flag))


def build_parser():
    p = Parser(description='MACER (Zhai et al., ICLR 2020): train and certify L2-robust classifiers with '
                           'randomized smoothing. docs/METHOD.md describes the method, docs/FORMATS.md the files.',
               formatter_class=HelpFormatter)
    p.add_argument('--version', action='version', version=f'macer {VERSION}')
    p.add_argument('--task', default='train', choices=('train', 'test'), help='train a model, or certify a checkpoint')
    p.add_argument('--preset', default=None, choices=sorted(PRESETS), metavar='NAME',
                   help='a training row of the paper by name: sets the defaults of its flags; flags given on the '
                        'command line win (presets.py spells each out). One of: ' + ', '.join(sorted(PRESETS)))
    p.add_argument('--dataset', default='cifar10', choices=DATASETS,
                   help='data set; `digits` is embedded (no download, no --root)')
    p.add_argument('--root', default='data', help='data set folder, in torchvision\'s layout (ImageNet: ROOT/train, ROOT/val)')
    p.add_argument('--no_download', action='store_true', help='never try to download a missing data set')
    p.add_argument('--arch', default=None, choices=ARCHS,
                   help='architecture (default: lenet for mnist, fashion_mnist and digits, resnet110 for cifar10/svhn, resnet50 '
                        'for imagenet)')
    p.add_argument('--input_layer', default=None, choices=INPUT_LAYERS,
                   help='what stands in front of the network, with the data set\'s channel statistics: none (MACER), '
                        'normalize (Cohen et al.: (x - mean) / std) or center (most of Salman et al.\'s models: '
                        'x - mean). Training: default none. Certification: default what the checkpoint records; '
                        'Cohen/Salman files record nothing and default to normalize (docs/METHOD.md lists which of '
                        'their models needs which)')
    p.add_argument('--normalize', dest='input_layer', action='store_const', const='normalize',
                   help='the same as --input_layer normalize (Cohen\'s and Salman\'s presets set it)')
    p.add_argument('--resume_ckpt', default=NONE,
                   help='checkpoint to certify (test) or to resume from (train); with --task train, `auto` resumes '
                        'from --ckptdir/latest.pth when it exists and starts afresh otherwise')
    p.add_argument('--ckptdir', default=NONE, help='folder for checkpoints (one run per folder)')
    p.add_argument('--matdir', default=NONE,
                   help='folder for result files: NAME.mat, NAME.{hard,soft}.tsv logs, NAME.stats.jsonl and '
                        'NAME.json (without it, results are printed, not saved)')
    p.add_argument('--device', default='auto', help='auto (CUDA when present, else CPU), cpu, cuda or cuda:N')
    p.add_argument('--precision', default='fp32', choices=PRECISIONS,
                   help='arithmetic of the network: fp32 (the paper\'s: IEEE fp32 on every device, TF32 off), tf32 '
                        '(CUDA, Ampere and newer: fp32 products and convolutions in TF32), bf16 (autocast, CPU and '
                        'CUDA) or fp16 (autocast with a gradient scaler, CUDA). Lower precision is faster; its '
                        'certificates hold for the network as run in that precision')
    p.add_argument('--deterministic', action='store_true',
                   help='deterministic algorithms and no cuDNN benchmarking: bit-exact runs on one GPU model (slower '
                        'on GPUs; CPU runs are deterministic without it)')
    p.add_argument('--dist_timeout', default=DEFAULT_DIST_TIMEOUT_H, type=positive_float, metavar='HOURS',
                   help='under torchrun: how long a process waits for the others at a synchronisation point (a '
                        'certification\'s final gather waits for the slowest share); a process that fails ends the '
                        'job at once')
    p.add_argument('--memory_format', default='channels_last', choices=MEMORY_FORMATS,
                   help='tensor layout of the network: channels_last (faster on CPU and CUDA; same arithmetic up to '
                        'the order of summation) or contiguous (the public code\'s)')
    p.add_argument('--compile', action='store_true',
                   help='torch.compile the network: faster steps after a compilation of a minute or more')
    p.add_argument('--seed', default=0, type=seed_type,
                   help='seed of all randomness; certification noise of test image i comes from (seed, i)')
    p.add_argument('--quiet', action='store_true', help='no progress bars (log lines and summaries still print)')

    g = p.add_argument_group('training')
    g.add_argument('--method', default=DEFAULT_METHOD, choices=list(METHODS),
                   help='; '.join(f'{m.name}: {m.summary}' for m in METHODS.values()) +
                        ' (one loop, one step each: docs/METHOD.md)')
    g.add_argument('--epochs', default=440, type=positive_int, help='number of training epochs')
    g.add_argument('--batch_size', default=64, type=positive_int,
                   help='distinct images per optimiser step (each is used in k or m noisy copies)')
    g.add_argument('--lr', default=0.01, type=positive_float, help='initial learning rate of SGD')
    g.add_argument('--momentum', default=0.9, type=momentum_type, help='SGD momentum')
    g.add_argument('--weight_decay', default=5e-4, type=nonneg_float, help='SGD weight decay')
    g.add_argument('--lr_milestones', default=[200, 400], type=positive_int, nargs='*',
                   help='epochs at which the learning rate is multiplied by --lr_factor (see --lr_step)')
    g.add_argument('--lr_factor', default=0.1, type=positive_float, help='learning-rate multiplier at each milestone')
    g.add_argument('--lr_step', default='end', choices=('end', 'start'),
                   help='when the schedule steps: end (after each epoch, so epochs 1-200 train at the first rate '
                        'with milestone 200) or start (before each epoch, as the public MACER code: epoch 200 '
                        'already trains at the lower rate). The default is end')
    g.add_argument('--train_images', default=None, type=positive_int, metavar='N',
                   help='train on the first N images of the training set (a quick run, a study); default: all')
    add_method_flags(g)
    g.add_argument('--workers', default=None, type=nonneg_int,
                   help='data-loading processes (default: 0 for digits and fashion_mnist, held in memory; else 4 or the number '
                        'of CPU cores if fewer)')
    g.add_argument('--save_every', default=1, type=positive_int,
                   help='write --ckptdir/latest.pth every SAVE_EVERY epochs (and at the last and certified epochs)')
    g.add_argument('--cert_from', default=200, type=positive_int,
                   help='certify (hard mode) after epoch CERT_FROM ... (into --matdir when given; a value beyond '
                        '--epochs certifies never)')
    g.add_argument('--cert_every', default=20, type=positive_int, help='... and every CERT_EVERY epochs after it')

    g = p.add_argument_group('smoothing (training and certification)')
    g.add_argument('--sigma', default=None, type=distance,
                   help='standard deviation of the Gaussian noise, in pixel units of [0, 1] images (training: default '
                        f'{DEFAULT_SIGMA}; certification: default the sigma the checkpoint was trained at, when it '
                        f'records one, else {DEFAULT_SIGMA})')
    g.add_argument('--beta', default=16.0, type=positive_float, help='inverse temperature of the softmax (MACER loss and soft certification)')

    g = p.add_argument_group('certification')
    g.add_argument('--start_img', default=500, type=nonneg_int, help='index of the first test image')
    g.add_argument('--num_img', default=500, type=positive_int, help='number of test images')
    g.add_argument('--skip', default=1, type=positive_int, help='certify test images start_img, start_img + skip, ...')
    g.add_argument('--N0', default=100, type=positive_int, help='noisy samples that choose the class')
    g.add_argument('--N', default=100000, type=positive_int, help='noisy samples that bound its probability')
    g.add_argument('--alpha', default=0.001, type=checked(check_alpha, 'a number strictly between 0 and 1/2'),
                   help='failure probability of each certificate')
    g.add_argument('--certify_batch', default=1000, type=positive_int, help='noisy samples per forward pass')
    g.add_argument('--mode', default=None, choices=MODE_CHOICES,
                   help='hard (Clopper-Pearson), soft (Bernstein) or both (default: both for --task test, hard '
                        'during training)')
    g.add_argument('--early_abstain', default=0, type=nonneg_int,
                   help='M > 0: after selection, abstain on an image when M further samples bound its top class\'s '
                        'probability below 1/2 (saves the N samples; every certificate issued is the standard one; '
                        'docs/METHOD.md). Hard mode decides with a few hundred; soft and both need about 1000. '
                        '0 (the default) is the standard protocol')
    g.add_argument('--split', default='test', choices=('test', 'train'),
                   help='--task test: the images certified: the test set, or the training set (without augmentation: '
                        'the smoothed predictions CAT-RS trains towards, from the selection votes of --N0 draws)')
    g.add_argument('--radii', default=None, type=radius_type, nargs='+', metavar='R',
                   help='--task test: certify sequentially at these radii only (a table\'s columns, e.g. 0.25 0.5 0.75 '
                        '1): each image draws estimation samples until its test at every radius is decided, often '
                        'far fewer than --N, and its row\'s radius is the largest one certified; each certificate '
                        'still holds with probability 1 - alpha. Hard mode; no ACR from such a run (docs/METHOD.md, '
                        '"Sequential certification")')
    g.add_argument('--shard', default=None, type=shard_type, metavar='I/K',
                   help='--task test: certify slice I of K of the images (every K-th, from the I-th) into a --matdir '
                        'of its own, e.g. one task of a job array each; visualize/merge.py joins the K folders into '
                        'the run one process would have written (docs/RUNS.md)')
    g.add_argument('--name', default=None, type=file_name,
                   help='--task test: name of the result files in --matdir (default: the checkpoint\'s epoch, as '
                        'the original); certifications during training are named by their epoch')
    return p


def given_flags(parser, argv):
    """The destinations of the flags written on the command line (not filled by a default or a preset)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def parse_args(argv=None):
    """The arguments, resolved. Two passes: the first finds --preset, whose values become defaults."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.preset is not None:
        parser.set_defaults(**PRESETS[first.preset])
    args = parser.parse_args(argv)
    args._given = given_flags(build_parser(), argv)
    return args


def given(path):
    return None if path in (None, '', NONE) else path


def check_flags_apply(args):
    """Refuse a flag given on the command line that this run would not use: a flag of another training method
    (naming the methods it belongs to), Consistency's attack flags without --adv_training, a training flag of
    --task test and --name of --task train, and a preset of one method with another --method. A flag that
    is accepted and then ignored would leave the user believing it applied."""
    given_ = args._given
    if args.task == 'test':
        used = sorted(f for f in given_ if f in training_flags())
        if used:
            raise UsageError(f'--{used[0]} is a training flag; --task test certifies a checkpoint and does not use '
                             f'it: leave it out')
        return
    if 'name' in given_:
        raise UsageError('--name names the results of --task test; the certifications during training are named by '
                         'their epoch: leave it out')
    if 'split' in given_:
        raise UsageError('--split chooses the images --task test certifies; the certifications during training are of '
                         'the test set: leave it out')
    for flag in ('radii', 'shard'):
        if flag in given_:
            raise UsageError(f'--{flag} applies to the certifications of --task test; those during training use '
                             f'CERTIFY on every image: leave it out')
    preset_method = PRESETS[args.preset].get('method', DEFAULT_METHOD) if args.preset else None
    if preset_method is not None and 'method' in given_ and preset_method != args.method:
        raise UsageError(f'--preset {args.preset} is a setting of {preset_method}, not of --method {args.method}: its '
                         f'flags are that method\'s; leave --method out, or choose a preset of {args.method}')
    method = METHODS[args.method]
    for flag in sorted(given_):
        owners = methods_of(flag)
        if owners and args.method not in owners:
            raise UsageError(f'--{flag} is a flag of {" and ".join(owners)}, not of --method {args.method}, which '
                             f'would not use it: leave it out')
        param = method.flags.get(flag)
        if param is not None and param.requires is not None and not getattr(args, param.requires):
            raise UsageError(f'--{flag} applies to {args.method} only with --{param.requires}: add '
                             f'--{param.requires}, or leave --{flag} out')


def resolve(args):
    """Fill the defaults that depend on other flags and check what single flags cannot."""
    check_flags_apply(args)
    args.resume_ckpt, args.ckptdir, args.matdir = given(args.resume_ckpt), given(args.ckptdir), given(args.matdir)
    args.arch = args.arch or DEFAULT_ARCH[args.dataset]
    check_fit(args.arch, args.dataset)
    method = METHODS[args.method]
    for flag, param in method.flags.items():  # the method's defaults; another method's flags stay None
        if getattr(args, flag) is None:
            setattr(args, flag, param.default)
    if args.task == 'train':
        problem = method.check(args)
        if problem:
            raise UsageError(problem)
    if args.workers is None:
        # more loader processes than cores only contend for them (and make torch warn)
        args.workers = 0 if args.dataset in IN_MEMORY else min(4, len(os.sched_getaffinity(0)))
    if args.radii is not None:
        if args.mode not in (None, 'hard'):
            raise UsageError(f'--radii certifies with sequential Clopper-Pearson tests, hard mode only, not --mode '
                             f'{args.mode}: leave --mode out')
        if args.early_abstain:
            raise UsageError('--radii gives up on hopeless images by itself (its futility rule); leave --early_abstain '
                             'out')
        args.mode = 'hard'
    if args.mode is None:
        args.mode = 'both' if args.task == 'test' else 'hard'
    if args.sigma is None and args.task == 'train':
        args.sigma = DEFAULT_SIGMA  # certification takes the checkpoint's (evaluate.resolve_sigma)
    if args.task == 'train':
        args.input_layer = args.input_layer or 'none'
        if args.input_layer != 'none' and args.dataset not in NORMALIZATION:
            source = ('--preset ' + args.preset) if 'input_layer' not in args._given and args.preset else \
                f'--input_layer {args.input_layer}'
            raise UsageError(f'{source} puts an input layer with channel statistics in front of the model, and there '
                             f'are none for {args.dataset} (only {", ".join(NORMALIZATION)}); add --input_layer none')
        if args.resume_ckpt == 'auto':
            if not args.ckptdir:
                raise UsageError('--resume_ckpt auto resumes from --ckptdir/latest.pth: give --ckptdir')
            latest = os.path.join(args.ckptdir, LATEST)
            args.resume_ckpt = latest if os.path.lexists(latest) else None
    elif args.resume_ckpt in (None, 'auto'):
        raise UsageError('--task test certifies a checkpoint: give it with --resume_ckpt FILE')
    if args.lr_milestones != sorted(set(args.lr_milestones)):
        raise UsageError(f'--lr_milestones {" ".join(map(str, args.lr_milestones))} must increase strictly')
    for flag in ('ckptdir', 'matdir'):
        if getattr(args, flag) is not None:
            writable_dir(getattr(args, flag), f'--{flag}')
    return args


def record(args):
    """The arguments that applied to this run, for its checkpoints and result files: no training flags in a
    certification's record, of a training run only its method's flags that applied
    (`methods.base.Method.flags_applying`: no `lbd` in a Gaussian model's, no attack flags in a Consistency
    model's trained without --adv_training), no `beta` where nothing used it."""
    method = METHODS[args.method]
    applying = set(method.flags_applying(args))
    out = {}
    for key, value in vars(args).items():
        if key.startswith('_') or (args.task == 'test' and key in training_flags()) or \
                (args.task == 'train' and key in TEST_FLAGS) or \
                (args.task == 'train' and methods_of(key) and key not in applying):
            continue
        if key == 'beta' and args.mode == 'hard' and not (args.task == 'train' and method.uses_beta):
            continue
        if key in PLUMBING_FLAGS and not (key == 'deterministic' and value):
            continue  # a run's record keeps --deterministic when it was set, never the timeout
        out[key] = value
    return out
