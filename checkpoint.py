"""Checkpoints: reading the three formats users bring, fitting them to a model, writing safely.

Formats read (always with `torch.load(weights_only=True)`: a checkpoint can hold tensors and
plain Python values, never objects whose loading runs code):
- this project's: the MACER keys `net` and `epoch` (so the original code can load it too), plus
  `format`, `arch`, `dataset`, `normalization`, `args` and, from training, `optimizer`,
  `scheduler` and `rng`;
- the public MACER code's: `{'net': state_dict, 'epoch': int}`, no input normalisation;
- Cohen's and Salman's: `{'arch': ..., 'state_dict': ...}`, keys behind `1.` (their
  `Sequential(NormalizeLayer, net)`) and sometimes `module.` (DataParallel); the model is rebuilt
  behind a NormalizeLayer with Cohen's constants.
"""
import hashlib
import os
import pickle
from dataclasses import dataclass, field

import torch

from common import UsageError, atomic_write
from model import base_network, build_model

FORMAT = 'macer-reimpl/1'

# Cohen's and Salman's architecture names -> (ours, the normalisation their model was trained behind)
COHEN_ARCHS = {'cifar_resnet110': ('resnet110', 'cifar10'), 'resnet50': ('resnet50', 'imagenet')}


@dataclass
class Checkpoint:
    path: str
    kind: str                  # 'project', 'macer' (the public MACER code) or 'cohen' (Cohen / Salman)
    state_dict: dict           # keys of the bare network (no `1.`, no `module.`)
    epoch: int
    arch: str = None           # None when the file does not say (the public MACER code's)
    normalization: str = None  # key of model.NORMALIZATION, or None
    args: dict = None          # the arguments of the run that wrote it (this project's only)
    content: dict = field(default=None, repr=False)  # everything in the file


def read_checkpoint(path):
    """Read any of the three formats; a UsageError (one line) for anything else."""
    if not os.path.exists(path):
        raise UsageError(f'checkpoint {path} does not exist; give an existing file to --resume_ckpt')
    if os.path.isdir(path):
        raise UsageError(f'checkpoint {path} is a folder; give a checkpoint file to --resume_ckpt')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'weights only' in str(e).lower() or 'weights_only' in str(e).lower():
            raise UsageError(f'refusing checkpoint {path}: it holds Python objects whose loading would run '
                             f'code, and only plain weights are loaded; re-save it as a state_dict') from None
        raise UsageError(f'checkpoint {path} is not a PyTorch checkpoint ({_first_line(e)})') from None
    except PermissionError:
        raise UsageError(f'checkpoint {path} is not readable; check its permissions') from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise UsageError(f'checkpoint {path} is truncated or not a PyTorch checkpoint '
                         f'({_first_line(e) or type(e).__name__})') from None
    return _interpret(path, content)


def _interpret(path, content):
    if not isinstance(content, dict):
        raise UsageError(f'checkpoint {path} holds a {type(content).__name__}, not a checkpoint; expected this '
                         f"project's, the MACER code's {{'net', 'epoch'}} or Cohen's {{'arch', 'state_dict'}}")
    if content.get('format') == FORMAT:
        return Checkpoint(path, 'project', _bare(path, content['net']), int(content.get('epoch', 0)),
                          content.get('arch'), content.get('normalization'), content.get('args'), content)
    if 'net' in content:
        return Checkpoint(path, 'macer', _bare(path, content['net']), int(content.get('epoch', 0)),
                          content=content)
    if 'state_dict' in content and 'arch' in content:
        theirs = content['arch']
        if theirs not in COHEN_ARCHS:
            raise UsageError(f'checkpoint {path} holds a {theirs!r} (Cohen/Salman format), which this tool does '
                             f'not build; supported: {", ".join(COHEN_ARCHS)}')
        arch, normalization = COHEN_ARCHS[theirs]
        return Checkpoint(path, 'cohen', _bare(path, content['state_dict']), int(content.get('epoch', 0)),
                          arch, normalization, content=content)
    raise UsageError(f'checkpoint {path} is none of the known formats (keys: {", ".join(map(str, list(content)[:8]))}); '
                     f"expected this project's, the MACER code's {{'net', 'epoch'}} or Cohen's {{'arch', 'state_dict'}}")


def _bare(path, state_dict):
    """Strip the `1.` of Cohen's Sequential and the `module.` of DataParallel / DDP."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UsageError(f'checkpoint {path}: its weights are not a state_dict of tensors')
    out = {}
    for key, value in state_dict.items():
        if key.startswith('1.'):
            key = key[2:]
        if key.startswith('module.'):
            key = key[len('module.'):]
        out[key] = value
    return out


def fit_model(ckpt, arch, num_classes, why):
    """Build `arch` as the checkpoint needs it (normalisation included) and load it strictly.

    `why` names where `arch` came from (e.g. '--dataset cifar10') for the error message.
    """
    if ckpt.arch is not None and ckpt.arch != arch:
        raise UsageError(f'checkpoint {ckpt.path} holds a {ckpt.arch}, but {why} uses {arch}; '
                         f'choose the matching --dataset or --arch')
    model = build_model(arch, num_classes, ckpt.normalization)
    load_weights(base_network(model), ckpt.state_dict, f'checkpoint {ckpt.path}', f'{arch} ({why})')
    return model


def load_weights(net, state_dict, source, target):
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


def save_checkpoint(path, content):
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    atomic_write(path, lambda tmp: torch.save(content, tmp))


def state_digest(model):
    """SHA-256 of the model's weights and buffers: the identity of a model in result files."""
    h = hashlib.sha256()
    for key, value in sorted(base_network(model).state_dict().items()):
        value = value.detach().to('cpu').contiguous()
        h.update(f'{key}:{value.dtype}:{tuple(value.shape)};'.encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _shape(t):
    return 'x'.join(map(str, t.shape)) or 'scalar'


def _first_line(e):
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ''
