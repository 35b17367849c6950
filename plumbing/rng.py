"""The generator states of a process (torch's CPU and CUDA ones, NumPy's, Python's), taken for a checkpoint and
put back when the run resumes, so that it continues bit for bit."""
import random

import numpy as np
import torch

from plumbing.errors import UsageError


def rng_state(device):
    """This process's generator states: torch's CPU one, NumPy's and Python's, and on a machine with CUDA
    every visible GPU's (`cuda`) with the index of the one training on `device` (`cuda_device`)."""
    state = {'torch': torch.get_rng_state(), 'numpy': _numpy_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
        if device.type == 'cuda':
            state['cuda_device'] = _cuda_index(device)
    return state


def set_rng_state(state, device, path):
    """Put back the generator states `rng_state` took, for training on `device`; `path` names the file.

    Of the GPUs' states, only that of the GPU that trained (`cuda_device`) is put back, onto `device`:
    the training noise is drawn on the device of the process alone, so its state is all that exactness
    needs, and a run resumes on a machine that shows fewer GPUs, or other ones, than the one that wrote
    the file. Files written before `cuda_device` was recorded (version 1.0) give the state of the GPU of
    the same index as `device`; when they hold none (this process trains on GPU i, the file holds the
    states of i GPUs or fewer) a UsageError says so. Training on the CPU, the GPUs' states are not used.
    """
    torch.set_rng_state(state['torch'])
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state['python'])
    if device.type != 'cuda' or 'cuda' not in state:
        return
    states, index = state['cuda'], _cuda_index(device)
    source = state.get('cuda_device')
    if source is None and index >= len(states):
        k = len(states)
        raise UsageError(f'{path} holds the CUDA random-number states of {k} GPU{"s" if k != 1 else ""}, and '
                         f'this process trains on GPU {index} (of the {torch.cuda.device_count()} it sees): resume on '
                         f'one of GPUs 0..{k - 1} (--device cuda:N, or CUDA_VISIBLE_DEVICES) to continue exactly')
    source = index if source is None else source
    if not (isinstance(source, int) and 0 <= source < len(states)):
        raise IndexError(f'the state of GPU {source!r} of {len(states)}')
    torch.cuda.set_rng_state(states[source], index)


def _cuda_index(device):
    return device.index if device.index is not None else torch.cuda.current_device()


def _numpy_state():
    # as plain values and a tensor: checkpoints are read with weights_only=True
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)
