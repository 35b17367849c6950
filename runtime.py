"""How a model is run: the device, the precision, the memory format and compilation.

`Runner(model, ...)` is the module that training and certification call; `model` itself keeps the
weights that the optimiser updates and the checkpoints save. Every speed setting sits here with its
reason. The defaults keep the paper's arithmetic (fp32); lower precision is a flag, and a
certificate made with it holds for the model as it is run (inputs rounded to bf16 / fp16 inside the
network), not for the fp32 model.
"""
import contextlib

import torch
import torch.nn as nn

from common import UsageError

PRECISIONS = ('fp32', 'bf16', 'fp16')
MEMORY_FORMATS = ('channels_last', 'contiguous')


def pick_device(spec):
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; a UsageError otherwise."""
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


def check_precision(precision, device):
    if precision == 'fp16' and device.type != 'cuda':
        raise UsageError('--precision fp16 needs CUDA (half-precision convolutions on CPU are slow and its '
                         'gradient scaler is CUDA-only); use --precision bf16 on CPU')


class Runner(nn.Module):
    """The forward pass as it is executed: autocast, memory format, optional torch.compile.

    Always returns float32 logits, so the statistics and losses downstream see one precision.
    """

    def __init__(self, model, device, precision='fp32', memory_format='channels_last', compile=False):
        super().__init__()
        self.model = model
        self.device_type = torch.device(device).type
        self.dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]
        # channels_last: oneDNN (CPU) and cuDNN tensor cores (CUDA) run these convolutions fastest on
        # NHWC; measured 2.3x (LeNet) and 1.2-1.5x (ResNet-110) on the forward pass on two CPU cores
        self.channels_last = memory_format == 'channels_last'
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # compile fuses the elementwise tail of each layer; it pays off on long runs, costs minutes to start
        self.forward_fn = torch.compile(model) if compile else model

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def forward(self, x):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            out = self.forward_fn(x)
        return out.float()
