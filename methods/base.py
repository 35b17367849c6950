"""What a training method is to the rest of the tool: its flags (with their defaults and help), what its record
keeps, the figures its steps add to the epoch's log, and one step function. `methods/__init__.py` holds the table
of every method; each method is one module of this package, built on the pure losses (`methods.losses`,
`macer.py`) and the attacks (`methods.attacks`).
"""
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional, Tuple

import torch


@dataclass(frozen=True)
class Param:
    """One flag of a method: its default for this method, what it does there, and its argparse type (None for
    a switch, `store_true`). Several methods may declare one flag (--lbd weighs three methods' terms): the
    command line declares it once, with every method's help and default, and the types must agree."""
    default: Any
    help: str
    type: Optional[Callable[[str], Any]] = None
    metavar: Optional[str] = None
    requires: Optional[str] = None  # a switch of the method without which this flag does not apply


def epsilon_at(epoch: int, epsilon: float, warmup: int) -> float:
    """An attack radius warmed up linearly (SmoothAdv, Consistency's SmoothAdv points): min(eps, epoch * eps /
    warmup) in epoch `epoch` (1-based; docs/METHOD.md)."""
    return min(epsilon, epoch * epsilon / warmup)


def warmup_at(epoch: int, warmup: int) -> float:
    """SmoothMix's warm-up factor in epoch `epoch` (1-based): min(1, epoch / warmup), their min(1, (epoch + 1) /
    warmup) of a 0-based epoch; it scales eta and the one-step adversary's radius."""
    return min(1.0, epoch / warmup)


def noisy(model, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The network on the noisy copies images_i + d_ij: logits [n, k, C] for images [n, C, H, W] and noise [n, k,
    C, H, W], in one forward pass."""
    n, k = noise.shape[:2]
    return model((images.unsqueeze(1) + noise).flatten(0, 1)).view(n, k, -1)


@dataclass
class Step:
    """What one training step gives back: the loss to minimise, its two parts (for the log), the logits of the
    noisy copies the classification term is on [n, k, C] (for the training accuracy) and the method's own
    figures of this minibatch (named sums, 0-dim tensors on the device)."""
    loss: torch.Tensor
    classification: torch.Tensor
    robustness: torch.Tensor
    logits: torch.Tensor
    figures: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One training method.

    name, summary: its `--method` value and a line for `--help`. flags: {flag name: `Param`}, the flags of
    this method with its defaults and help (a flag several methods share is one flag of the command line).
    copies: the flag that sets how many noisy copies of each image a
    step trains on ('gauss_num', 'num_noise_vec'), None for one. step(model, x, y, noise [n, k, C, H, W],
    hyper, batch) -> `Step`: one minibatch, `hyper` this epoch's hyper-parameters (`hyper(args, epoch)`, a
    namespace) and `batch` what else the loader gave (the images' indices for a method that reads per-image
    data). figures: the names of the figures its steps return, summed over the epoch; log(args, epoch, hyper,
    sums, images) -> {key: value} for log.jsonl from them and the epoch's hyper-parameters. check(args) -> a
    message (one line) for a combination of its flags that cannot train, None where it can. scaling: the flags whose values
    scale the loss or the attack (what to lower, besides --lr, when training diverges). prepare(args,
    dataset) -> an object handed to every step as `hyper.prepared` (per-run data: CAT-RS's smoothed
    predictions), None by default. uses_beta: whether training uses --beta (MACER's robustness term).
    line(entry) -> what the epoch's printed line adds from its log record ('' for nothing).
    """
    name: str
    summary: str
    flags: Dict[str, Param]
    step: Callable[..., Step]
    hyper: Callable[[Any, int], SimpleNamespace]
    copies: Optional[str] = None
    figures: Tuple[str, ...] = ()
    log: Callable[..., Dict[str, Any]] = (lambda args, epoch, hyper, sums, images: {})
    check: Callable[[Any], Optional[str]] = (lambda args: None)
    scaling: Callable[[Any], Tuple[str, ...]] = (lambda args: ())
    prepare: Optional[Callable[[Any, Any], Any]] = None
    needs_index: bool = False
    uses_beta: bool = False
    line: Callable[[Dict[str, Any]], str] = (lambda entry: '')

    def copies_of(self, args) -> int:
        """k (or m): the noisy copies of each image per step."""
        return 1 if self.copies is None else int(getattr(args, self.copies))

    def flags_applying(self, args) -> Tuple[str, ...]:
        """The flags of this run that apply (a record keeps only those): all of the method's but those whose
        `Param.requires` switch is off."""
        return tuple(f for f, p in self.flags.items() if p.requires is None or getattr(args, p.requires))
