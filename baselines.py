"""The two methods MACER is compared with (docs/METHOD.md, "The methods MACER is compared with"), in the shape of `macer.macer_loss`.

- Gaussian augmentation (Cohen et al. 2019): cross-entropy on noisy copies.
- SmoothAdv (Salman et al. 2019): PGD against the smoothed soft classifier, then cross-entropy
  on all m noisy copies of the adversarial point, with the noise of the attack.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def gaussian_loss(logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy averaged over every noisy copy: returns `(loss, classification, robustness)`.

    logits: [n, k, C] for k noisy copies of each of n images; targets: [n]. Cohen et al. 2019
    train on one copy per image (k = 1); SmoothAdv's training step is this loss on its m copies
    (Salman et al.'s `--train-multi-noise`). The robustness part is 0.
    """
    n, k, C = logits.shape
    ce = F.cross_entropy(logits.reshape(n * k, C).float(), targets.repeat_interleave(k))
    return ce, ce.detach(), torch.zeros((), device=logits.device)


def smoothadv_attack(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor, *, epsilon: float,
                     num_steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Salman et al. 2019, SmoothAdv with PGD (L2) on the Monte-Carlo soft smoothed classifier.

    x: [n, C, H, W] in [0, 1]; targets: [n]; noise: [n, m, C, H, W], the noise d_1..d_m that the
    training step uses too. Finds delta, one per image and shared by its m copies, that maximises
        -log(mean_m softmax(f(x + delta + d_m))[y])
    subject to ||delta||_2 <= epsilon and x + delta in [0, 1]. delta starts at 0; each of
    `num_steps` steps moves it by 2 * epsilon / num_steps along the gradient normalised to unit L2
    norm per image (a zero gradient is replaced by a random unit direction, where Salman's code
    uses an unnormalised one), clamps x + delta to [0, 1], then projects delta onto the epsilon
    ball. The model is in eval mode during the attack and gets its mode back after.

    The gradient is scaled per image, as a gradient scaler scales a loss: fp16 holds nothing below
    6e-8, and a well-classified image's gradient at the logits (softmax - one-hot, 1e-8 and less)
    would round to zero inside a network run in fp16, leaving a random direction. Each image's
    gradient at the logits (float32, at most 1 in size) is multiplied by the power of two that
    brings its largest entry into [1/2, 1): an image's direction is its own gradient's (eval mode:
    no image's gradient depends on another's), normalised, so the factor changes nothing but the
    rounding; no entry can overflow fp16 (65504) at the logits, and a power of two leaves fp32
    arithmetic bit for bit as it was (barring values below fp32's 1e-38, where it is more exact).

    Returns `(x + delta, random_directions)`: the adversarial images, detached, and how many
    (image, step) pairs took a random direction (a 0-dim tensor on the device: no host sync).
    """
    random_directions = torch.zeros((), dtype=torch.int64, device=x.device)
    if epsilon <= 0 or num_steps <= 0:
        return x, random_directions
    was_training = model.training
    model.eval()
    # a runtime.Runner under DDP attacks through its unsynchronised network: no parameter gradients here
    forward = getattr(model, 'local', model)
    n, m = noise.shape[:2]
    unit = (lambda v: v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1)))
    delta = torch.zeros_like(x, requires_grad=True)
    step = 2.0 * epsilon / num_steps
    try:
        for _ in range(num_steps):
            logits = forward((x + delta).unsqueeze(1).add(noise).flatten(0, 1)).view(n, m, -1)
            p = F.softmax(logits.float(), dim=2).mean(dim=1)
            loss = F.nll_loss(torch.log(p.clamp_min(1e-20)), targets, reduction='sum')
            at_logits, = torch.autograd.grad(loss, logits, retain_graph=True)
            grad, = torch.autograd.grad(logits, delta, grad_outputs=scaled_per_image(at_logits))
            norm = grad.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
            # random directions drawn every step (not only when needed): no host sync to ask
            direction = torch.where(norm > 0, grad / norm.clamp_min(1e-30), unit(torch.randn_like(grad)))
            random_directions += (norm == 0).sum()
            with torch.no_grad():
                delta.add_(step * direction)
                delta.copy_((x + delta).clamp_(0.0, 1.0) - x)
                delta.copy_(delta.renorm(p=2, dim=0, maxnorm=epsilon))
    finally:
        model.train(was_training)
    return (x + delta).detach(), random_directions


def scaled_per_image(grad: torch.Tensor) -> torch.Tensor:
    """`grad` [n, ...] with each image's slice multiplied by the power of two 2^k, k >= 0, that brings its
    largest absolute entry into [1/2, 1) (an all-zero slice stays zero): exact, no rounding."""
    largest = grad.detach().flatten(1).abs().amax(dim=1)
    _, exponent = torch.frexp(largest)  # largest = mantissa * 2^exponent, mantissa in [1/2, 1)
    return torch.ldexp(grad, (-exponent).clamp_min(0).view(-1, *[1] * (grad.dim() - 1)))
