"""How a model is run: the device, the precision, the memory format and compilation.

`Runner(model, ...)` is the module that training and certification call; `model` itself keeps the
weights that the optimiser updates and the checkpoints save. Every speed setting sits here with its
reason. The defaults keep the paper's arithmetic (fp32); lower precision is a flag, and a
certificate made with it holds for the model as it is run (inputs rounded to bf16 / fp16 inside the
network), not for the fp32 model.
"""
import os
import platform

import torch
import torch.nn as nn

from plumbing.errors import UsageError

PRECISIONS = ('fp32', 'tf32', 'bf16', 'fp16')
# autocast's dtype per precision (None: no autocast; fp32 and tf32 differ in the fp32 precision of the kernels)
AUTOCAST = {'fp32': None, 'tf32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}

MEMORY_FORMATS = ('channels_last', 'contiguous')


def pick_device(spec, dist=None):
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; a UsageError otherwise.
    Under torchrun each rank takes the GPU of its local rank."""
    if dist is not None and dist.world > 1:
        if spec in ('auto', 'cuda') and torch.cuda.is_available():
            return torch.device('cuda', dist.local_rank)
        if spec in ('auto', 'cpu'):
            return torch.device('cpu')
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


def speed_settings(device, precision='fp32', deterministic=False):
    """The process-wide settings of a device: the fp32 precision of its kernels, and cuDNN's choice of
    algorithms.

    fp32 (and bf16 / fp16, whose autocast leaves some operations in fp32) means IEEE fp32 on every
    device: PyTorch runs fp32 convolutions as TF32 on Ampere and newer GPUs unless told otherwise.
    tf32 allows TF32 in CUDA matrix products and convolutions (10-bit mantissa; faster, other numbers).
    deterministic: PyTorch's deterministic algorithms and no cuDNN benchmarking (an operation that has
    no deterministic version warns, and runs its usual kernel), for bit-exact runs on one GPU model.
    """
    fp32 = 'tf32' if precision == 'tf32' else 'ieee'
    torch.backends.fp32_precision = 'ieee'
    torch.backends.cuda.matmul.fp32_precision = fp32
    torch.backends.cudnn.conv.fp32_precision = fp32
    torch.backends.cudnn.rnn.fp32_precision = fp32
    torch.backends.mkldnn.matmul.fp32_precision = 'ieee'
    torch.backends.mkldnn.conv.fp32_precision = 'ieee'
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace; read when its first handle is made, so
        # set before any CUDA work (main calls this before building a model)
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == 'cuda':
        # input sizes never change: let cuDNN time its convolution algorithms once and keep the fastest
        # (the choice can differ between runs, and so can the last bits of the results)
        torch.backends.cudnn.benchmark = True


def fp32_settings():
    """The fp32 precision the kernels run at now, per backend (for the GPU check and the tests)."""
    return {'cuda.matmul': torch.backends.cuda.matmul.fp32_precision,
            'cudnn.conv': torch.backends.cudnn.conv.fp32_precision,
            'mkldnn.conv': torch.backends.mkldnn.conv.fp32_precision,
            'mkldnn.matmul': torch.backends.mkldnn.matmul.fp32_precision}


def check_precision(precision, device):
    if precision == 'fp16' and device.type != 'cuda':
        raise UsageError('--precision fp16 needs CUDA (half-precision convolutions on CPU are slow and its '
                         'gradient scaler is CUDA-only); use --precision bf16 on CPU')
    if precision == 'tf32' and device.type != 'cuda':
        raise UsageError('--precision tf32 is a mode of NVIDIA GPUs (Ampere and newer); on CPU use fp32 or bf16')


class Runner(nn.Module):
    """The forward pass as it is executed: autocast, memory format, DistributedDataParallel, torch.compile.

    Always returns float32 logits, so the statistics and losses downstream see one precision.
    `local(x)` runs the same network without DDP's gradient synchronisation (SmoothAdv's attack
    differentiates with respect to the input only).
    """

    def __init__(self, model, device, precision='fp32', memory_format='channels_last', compile=False, dist=None):
        super().__init__()
        device = torch.device(device)
        self.model = model
        self.device_type = device.type
        self.dtype = AUTOCAST[precision]
        # channels_last: oneDNN (CPU) and cuDNN tensor cores (CUDA) run these convolutions fastest on
        # NHWC; measured 2.3x (LeNet) and 1.2-1.5x (ResNet-110) on the forward pass on two CPU cores.
        # Set before DDP wraps the model, whose gradient buckets follow the parameters' layout.
        self.channels_last = memory_format == 'channels_last'
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        synced = model
        if dist is not None and dist.world > 1:
            synced = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda'
                                                         else None)
        # compile fuses the elementwise tail of each layer; it pays off on long runs, costs minutes to start
        self.forward_fn = torch.compile(synced) if compile else synced
        self.local_fn = self.forward_fn if synced is model else (torch.compile(model) if compile else model)
        # kept out of the module tree (not a submodule): it only points back at this runner
        object.__setattr__(self, 'unsynced', _Unsynced(self))

    def _run(self, fn, x):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return fn(x).float()
        with torch.autocast(self.device_type, dtype=self.dtype):
            return fn(x).float()

    def forward(self, x):
        return self._run(self.forward_fn, x)

    def local(self, x):
        return self._run(self.local_fn, x)


class _Unsynced(nn.Module):
    """The network as run, without DistributedDataParallel: what certification calls. DDP's forward
    broadcasts buffers from rank 0, a collective that a rank with no image to certify never joins (the
    job would hang); certification needs no synchronisation, each rank certifies its own images."""

    def __init__(self, runner):
        super().__init__()
        self.runner = [runner]  # a list: not registered as a submodule (no cycle in .modules())

    def forward(self, x):
        return self.runner[0].local(x)

    def train(self, mode=True):
        self.runner[0].train(mode)  # Smooth calls .eval(): the network as run switches to eval mode
        return super().train(mode)


def gpu_model(device):
    """The GPU model a CUDA `device` is ('NVIDIA H100 80GB HBM3', ...), None for the CPU.

    Noise drawn on a GPU and the kernels it runs depend on its model: results are bit-exact on one GPU
    model only, so checkpoints and result identities record it."""
    device = torch.device(device)
    if device.type != 'cuda':
        return None
    return torch.cuda.get_device_name(device.index if device.index is not None else torch.cuda.current_device())


def cpu_name():
    """The CPU's model name ('' when the system does not say): results are bit-exact on one CPU model only."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def device_record(device):
    """The hardware that runs the arithmetic, for checkpoints: {'type', 'gpu' (None on the CPU), 'cpu'}."""
    return {'type': device.type, 'gpu': gpu_model(device), 'cpu': cpu_name()}
