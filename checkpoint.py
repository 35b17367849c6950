"""Checkpoints: reading the three formats users bring, checking them, fitting them to a model, writing safely.

Formats read (always with `torch.load(weights_only=True)`: a checkpoint can hold tensors and
plain Python values, never objects whose loading runs code):
- this project's: the MACER keys `net` and `epoch` (so the original code can load it too), plus
  `format`, `version`, `run_id`, `arch`, `dataset`, `input_layer`, `normalization` (the channel
  statistics of the input layer), `num_classes`, `args`, `history` and, from training, `optimizer`,
  `scheduler`, `scaler` and `rng`. `content(...)` builds it, `slim(...)` drops what only resuming needs;
- the public MACER code's: `{'net': state_dict, 'epoch': int}`, no input layer;
- Cohen's and Salman's: `{'arch': ..., 'state_dict': ...}`, keys behind `1.` (their
  `Sequential(input layer, net)`) and sometimes `module.` (DataParallel). The input layer has no
  weights, so the file does not say which one it was: Cohen's `NormalizeLayer` by default, Salman's
  `InputCenterLayer` with `input_layer='center'` (docs/METHOD.md lists which of their models needs which).

Every value is checked when read: a file that is not a regular file, not a checkpoint, holds NaN
weights or odd entries is refused with one line, never a traceback.

The Python API, for certifying one image or one's own model:

    model = load_model('checkpoint.pth', 'cifar10')          # an nn.Module on images in [0, 1]
    smooth = rs.core.Smooth(model, 10, sigma=0.25, device='cpu')
"""
import errno
import hashlib
import math
import os
import pickle
import stat
import warnings
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
import torch.nn as nn

from data import DATASETS, INPUT_SHAPE, NUM_CLASSES
from model import ARCH_INPUT, ARCHS, DEFAULT_ARCH, INPUT_LAYERS, NORMALIZATION, base_network, build_model
from plumbing.errors import UsageError, first_line
from plumbing.files import atomic_write
from plumbing.records import VERSION

FORMAT = 'macer-reimpl/1'

# Cohen's and Salman's architecture names -> (ours, the data set whose statistics their input layer uses)
COHEN_ARCHS = {'cifar_resnet110': ('resnet110', 'cifar10'), 'resnet50': ('resnet50', 'imagenet')}

# what `slim` keeps: everything but the state that only resuming a training run needs
SLIM_KEYS = ('format', 'version', 'run_id', 'net', 'epoch', 'arch', 'dataset', 'input_layer', 'normalization',
             'num_classes', 'args', 'history')


@dataclass
class Checkpoint:
    path: str
    kind: str                  # 'project', 'macer' (the public MACER code) or 'cohen' (Cohen / Salman)
    state_dict: dict           # keys of the bare network (no `1.`, no `module.`)
    epoch: int
    arch: Optional[str] = None         # None when the file does not say (the public MACER code's)
    input_layer: Optional[str] = None  # 'none', 'normalize' or 'center'; None when the file does not say (Cohen/Salman)
    stats: Optional[str] = None        # key of model.NORMALIZATION for the input layer's statistics, or None
    dataset: Optional[str] = None      # the data set it was trained on, when the file says (this project's)
    args: Optional[dict] = None        # the arguments of the run that wrote it (this project's only)
    run_id: Optional[str] = None       # the identity of the training run that wrote it (this project's)
    version: Optional[str] = None      # the version of this tool that wrote it (None: before 1.0.0)
    content: dict = field(default_factory=dict, repr=False)  # everything in the file


def read_checkpoint(path: str) -> Checkpoint:
    """Read any of the three formats; a UsageError (one line) for anything else."""
    _check_file(path)
    try:
        with warnings.catch_warnings():
            # a refused legacy pickle makes torch warn before it raises: the refusal alone is the message
            warnings.simplefilter('ignore')
            content = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'weights only' in str(e).lower() or 'weights_only' in str(e).lower():
            raise UsageError(f'refusing checkpoint {path}: it holds Python objects whose loading would run '
                             f'code, and only plain weights are loaded; re-save it as a state_dict') from None
        raise UsageError(f'checkpoint {path} is not a PyTorch checkpoint ({first_line(e)})') from None
    except PermissionError:
        raise UsageError(f'checkpoint {path} is not readable; check its permissions') from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise UsageError(f'checkpoint {path} is truncated or not a PyTorch checkpoint ({first_line(e)})') from None
    return _interpret(path, content)


def _check_file(path):
    """A regular file (or a link to one) that exists: a FIFO would block the read, /dev/zero never end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f'checkpoint {path} does not exist; give an existing file to --resume_ckpt') from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UsageError(f'checkpoint {path} is a loop of symbolic links; give a checkpoint file to '
                             f'--resume_ckpt') from None
        raise UsageError(f'checkpoint {path} cannot be read ({e.strerror})') from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f'checkpoint {path} is a folder; give a checkpoint file to --resume_ckpt')
    if not stat.S_ISREG(st.st_mode):
        kind = ('a FIFO' if stat.S_ISFIFO(st.st_mode) else 'a device' if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else 'a socket' if stat.S_ISSOCK(st.st_mode) else 'not a regular file')
        raise UsageError(f'checkpoint {path} is {kind}, not a file; give a checkpoint file to --resume_ckpt')


def _interpret(path, content):
    if not isinstance(content, dict):
        raise UsageError(f'checkpoint {path} holds a {type(content).__name__}, not a checkpoint; expected this '
                         f"project's, the MACER code's {{'net', 'epoch'}} or Cohen's {{'arch', 'state_dict'}}")
    if content.get('format') == FORMAT:
        if 'net' not in content:
            raise UsageError(f'checkpoint {path} has this project\'s format but no weights (`net`); the file was '
                             f'edited or damaged')
        arch = _choice(path, content, 'arch', ARCHS)
        dataset = _choice(path, content, 'dataset', DATASETS)
        stats = _choice(path, content, 'normalization', tuple(NORMALIZATION))
        # files written before `input_layer` existed say only `normalization` (Cohen's layer, or none)
        input_layer = _choice(path, content, 'input_layer', INPUT_LAYERS) or ('normalize' if stats else 'none')
        if (input_layer == 'none') != (stats is None):
            raise UsageError(f'checkpoint {path}: input layer {input_layer!r} with statistics {stats!r} do not go '
                             f'together; the file was edited or damaged')
        args = content.get('args')
        if args is not None and not isinstance(args, dict):
            raise UsageError(f'checkpoint {path}: its `args` are a {type(args).__name__}, not a record of arguments')
        run_id = content.get('run_id')
        if run_id is not None and not isinstance(run_id, str):
            raise UsageError(f'checkpoint {path}: its `run_id` is a {type(run_id).__name__}, not a run identity')
        version = content.get('version')
        return Checkpoint(path, 'project', _bare(path, content['net']), _epoch(path, content), arch, input_layer,
                          stats, dataset, args, run_id, version if isinstance(version, str) else None, content)
    if 'net' in content:
        return Checkpoint(path, 'macer', _bare(path, content['net']), _epoch(path, content), input_layer='none',
                          content=content)
    if 'state_dict' in content and 'arch' in content:
        theirs = content['arch']
        if not isinstance(theirs, str) or theirs not in COHEN_ARCHS:
            raise UsageError(f'checkpoint {path} holds a {theirs!r} (Cohen/Salman format), which this tool does '
                             f'not build; supported: {", ".join(COHEN_ARCHS)}')
        arch, stats = COHEN_ARCHS[theirs]
        return Checkpoint(path, 'cohen', _bare(path, content['state_dict']), _epoch(path, content), arch,
                          None, stats, content=content)
    raise UsageError(f'checkpoint {path} is none of the known formats (keys: {", ".join(map(str, list(content)[:8]))}); '
                     f"expected this project's, the MACER code's {{'net', 'epoch'}} or Cohen's {{'arch', 'state_dict'}}")


def _epoch(path, content):
    """The stored epoch: a non-negative integer (0 when the file has none)."""
    epoch = content.get('epoch', 0)
    if isinstance(epoch, float) and math.isfinite(epoch) and epoch == int(epoch):
        epoch = int(epoch)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise UsageError(f'checkpoint {path}: its epoch is {epoch!r}, not a non-negative integer; the file was '
                         f'edited or damaged')
    return epoch


def _choice(path, content, key, allowed):
    value = content.get(key)
    if value is not None and (not isinstance(value, str) or value not in allowed):
        raise UsageError(f'checkpoint {path}: its {key} is {value!r}, which this tool does not know '
                         f'(known: {", ".join(allowed)})')
    return value


def _bare(path, state_dict):
    """Strip the `1.` of Cohen's Sequential and the `module.` of DataParallel / DDP; check every weight."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UsageError(f'checkpoint {path}: its weights are not a state_dict of tensors')
    odd = [k for k in state_dict if not isinstance(k, str)]
    if odd:
        raise UsageError(f'checkpoint {path}: its weights are keyed by {type(odd[0]).__name__} {odd[0]!r}, not by '
                         f'parameter names; the file is not a state_dict')
    out = {}
    for key, value in state_dict.items():
        if key.startswith('1.'):
            key = key[2:]
        if key.startswith('module.'):
            key = key[len('module.'):]
        out[key] = value
    bad = next((k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UsageError(f'checkpoint {path} holds non-finite weights (NaN or infinity in {bad}): no certificate '
                         f'or training can start from it; use an earlier checkpoint of the run')
    return out


def resolve_input_layer(ckpt: Checkpoint, input_layer: Optional[str] = None) -> str:
    """The input layer to build `ckpt` behind: what the file records, or `input_layer` where it records nothing.

    Cohen's and Salman's files record nothing (default 'normalize', Cohen's); this project's and the
    MACER code's record theirs, and another choice is refused rather than silently certifying a
    different network.
    """
    if ckpt.input_layer is None:
        layer = input_layer or 'normalize'
    else:
        layer = ckpt.input_layer
        if input_layer is not None and input_layer != layer:
            where = "this project's record" if ckpt.kind == 'project' else "the MACER code's (none)"
            raise UsageError(f'checkpoint {ckpt.path} was trained with input layer {layer!r} ({where}), not '
                             f'{input_layer!r}; leave --input_layer out')
    if layer != 'none' and ckpt.stats is None:
        raise UsageError(f'checkpoint {ckpt.path}: --input_layer {layer} needs channel statistics, and the file '
                         f'names none; leave --input_layer out')
    return layer


def fit_model(ckpt: Checkpoint, arch: str, num_classes: int, why: str, input_layer: Optional[str] = None) -> nn.Module:
    """Build `arch` behind the checkpoint's input layer (see `resolve_input_layer`) and load it strictly.

    `why` names where `arch` came from (e.g. '--dataset cifar10') for the error message.
    """
    if ckpt.arch is not None and ckpt.arch != arch:
        raise UsageError(f'checkpoint {ckpt.path} holds a {ckpt.arch}, but {why} uses {arch}; '
                         f'choose the matching --dataset or --arch')
    layer = resolve_input_layer(ckpt, input_layer)
    stats = ckpt.stats if layer != 'none' else None
    if stats is not None and len(NORMALIZATION[stats][0]) != ARCH_INPUT[arch][0]:
        raise UsageError(f'checkpoint {ckpt.path} puts {stats} statistics ({len(NORMALIZATION[stats][0])} '
                         f'channels) in front of a {arch}, which takes {ARCH_INPUT[arch][0]}; the file was edited '
                         f'or damaged')
    model = build_model(arch, num_classes, layer, stats)
    load_weights(base_network(model), ckpt.state_dict, f'checkpoint {ckpt.path}', f'{arch} ({why})')
    return model


def check_dataset(ckpt: Checkpoint, dataset: str) -> None:
    """A checkpoint that records its data set is certified and resumed on that data set only."""
    if ckpt.dataset is not None and ckpt.dataset != dataset:
        raise UsageError(f'checkpoint {ckpt.path} was trained on {ckpt.dataset}, not {dataset}: use '
                         f'--dataset {ckpt.dataset}')


def check_fit(arch: str, dataset: str, source: Optional[str] = None, fix: Optional[str] = None) -> None:
    """Refuse an architecture whose input does not fit the data set's images (`model.ARCH_INPUT`,
    `data.INPUT_SHAPE`): the channels must match, and the size too but for ResNet-50 (it pools to any size).

    The one check of the command line (`--arch`) and of `load_model`; `source` names where `arch` came
    from and `fix` the remedy, for the message (default: the --arch flag).
    """
    want, have = ARCH_INPUT[arch], INPUT_SHAPE[dataset]
    if want[0] != have[0] or (arch != 'resnet50' and want != have):
        source = source or f'--arch {arch}'
        fix = fix or f'leave --arch out to use the architecture of {dataset}'
        raise UsageError(f'{source} takes {"x".join(map(str, want))} inputs but {dataset} images are '
                         f'{"x".join(map(str, have))}; {fix}')


def load_model(path: Union[str, 'os.PathLike[str]'], dataset: str, input_layer: Optional[str] = None,
               arch: Optional[str] = None) -> nn.Module:
    """The network of checkpoint `path` as its authors ran it: an `nn.Module` on images in [0, 1], in eval mode.

    Reads this project's, the MACER code's and Cohen's/Salman's formats. `input_layer` (None,
    'normalize' or 'center'): None means what the file records, or Cohen's 'normalize' for a
    Cohen/Salman file, which records nothing (most of Salman's models need 'center'). `arch`: by
    default what the file records, else the data set's architecture; it must take the data set's
    images, as on the command line (`check_fit`). Raises `plumbing.errors.UsageError` with a one-line message
    for anything that does not fit.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f'load_model: the checkpoint path is {path!r}, not a file name')
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise UsageError(f'load_model: unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    if input_layer is not None and (not isinstance(input_layer, str) or input_layer not in INPUT_LAYERS):
        raise UsageError(f'load_model: unknown input_layer {input_layer!r}; choose one of {", ".join(INPUT_LAYERS)} '
                         f'(or None: what the file records)')
    if arch is not None and (not isinstance(arch, str) or arch not in ARCHS):
        raise UsageError(f'load_model: unknown arch {arch!r}; choose one of {", ".join(ARCHS)} (or None: what the '
                         f'file records)')
    if arch is not None:
        check_fit(arch, dataset, f'load_model: arch={arch!r}', f'leave arch out to use the architecture of {dataset}')
    ckpt = read_checkpoint(os.fspath(path))
    check_dataset(ckpt, dataset)
    if arch is None and ckpt.arch is not None:
        check_fit(ckpt.arch, dataset, f'checkpoint {ckpt.path} holds a {ckpt.arch}, which',
                  'give the data set it was trained on')
    arch = arch or ckpt.arch or DEFAULT_ARCH[dataset]
    return fit_model(ckpt, arch, NUM_CLASSES[dataset], f'--dataset {dataset}', input_layer).eval()


def load_weights(net: nn.Module, state_dict: dict, source: str, target: str) -> None:
    """`net.load_state_dict(state_dict, strict=True)` with a one-line error naming what differs."""
    mine = net.state_dict()
    missing = [k for k in mine if k not in state_dict]
    unexpected = [k for k in state_dict if k not in mine]
    shapes = [f'{k}: {_shape(state_dict[k])} in the file, {_shape(mine[k])} here'
              for k in mine if k in state_dict and state_dict[k].shape != mine[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} keys missing (e.g. {", ".join(missing[:3])})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected (e.g. {", ".join(unexpected[:3])})')
        if shapes:
            parts.append(f'{len(shapes)} of another shape (e.g. {shapes[0]})')
        raise UsageError(f'{source} does not fit {target}: {"; ".join(parts)}; '
                         f'choose the matching --dataset or --arch')
    net.load_state_dict(state_dict, strict=True)


def content(model: nn.Module, *, epoch: int, arch: str, dataset: str, num_classes: int, input_layer: str,
            stats: Optional[str], args: dict, run_id: str, history: list, device: Optional[dict] = None,
            **training) -> dict:
    """This project's checkpoint as a dict: the format `read_checkpoint` reads back.

    `device`: the hardware that trained it (`plumbing.devices.device_record`: {'type', 'gpu', 'cpu'}), absent when
    not given: a run continues bit for bit on the same device model only. `training` holds what resuming
    needs (`optimizer`, `scheduler`, `scaler`, `rng` state dicts).
    """
    out = {'format': FORMAT, 'version': VERSION, 'run_id': run_id, 'net': base_network(model).state_dict(),
           'epoch': epoch, 'arch': arch, 'dataset': dataset, 'input_layer': input_layer, 'normalization': stats,
           'num_classes': num_classes, 'args': args, 'history': history, **training}
    if device is not None:
        out['device'] = device
    return out


def slim(full: dict) -> dict:
    """A checkpoint without what only resuming needs: it certifies exactly as `full` but cannot resume."""
    out = {k: full[k] for k in SLIM_KEYS if k in full}
    out['net'] = {k: v.contiguous() for k, v in out['net'].items()}  # the default layout, whatever the run's
    return out


def save_checkpoint(path: str, content: dict) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    atomic_write(path, lambda tmp: torch.save(content, tmp))


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the model's weights and buffers: the identity of a model in result files."""
    h = hashlib.sha256()
    for key, value in sorted(base_network(model).state_dict().items()):
        value = value.detach().to('cpu').contiguous()
        h.update(f'{key}:{value.dtype}:{tuple(value.shape)};'.encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _shape(t):
    return 'x'.join(map(str, t.shape)) or 'scalar'
