"""The attacks some methods train against (docs/METHOD.md, "The methods MACER is compared with"): each finds,
for a minibatch and its noise draws, the points (or the noise) a method's loss is then taken at.

- `smoothadv_attack`: Salman et al.'s PGD on the soft smoothed classifier (SmoothAdv);
- `soft_pgd`, `smoothmix_attack`: Jeong et al.'s attack on it (SmoothMix; Consistency's SmoothAdv points);
- `catrs_attack`: CAT-RS's attack on the noise itself, towards a high KL divergence from the smoothed
  prediction.

Every attack runs with the network in eval mode and through the network without DistributedDataParallel's
synchronisation (`attacking`), and takes its gradients from `per_image_gradient`, which scales each image's
gradient so that fp16 cannot round it away.
"""
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from macer import at_least_fp32
from methods.losses import _xlogx


@contextmanager
def attacking(model: nn.Module) -> Iterator[nn.Module]:
    """The network for an attack: in eval mode (their code's, and no image's gradient then depends on another's),
    through the unsynchronised network of a `plumbing.devices.Runner` under DDP (no parameter gradients are
    made, so nothing to synchronise), and back in its mode afterwards, however the attack ends."""
    was_training = model.training
    model.eval()
    try:
        yield getattr(model, 'local', model)
    finally:
        model.train(was_training)


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

    The gradient is scaled per image against fp16 underflow (`per_image_gradient`).

    Returns `(x + delta, random_directions)`: the adversarial images, detached, and how many
    (image, step) pairs took a random direction (a 0-dim tensor on the device: no host sync).
    """
    random_directions = torch.zeros((), dtype=torch.int64, device=x.device)
    if epsilon <= 0 or num_steps <= 0:
        return x, random_directions
    unit = (lambda v: v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1)))
    delta = torch.zeros_like(x, requires_grad=True)
    step = 2.0 * epsilon / num_steps
    with attacking(model) as forward:
        for _ in range(num_steps):
            grad, _ = smoothed_ce_gradient(forward, x + delta, delta, targets, noise)
            norm = grad.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
            # random directions drawn every step (not only when needed): no host sync to ask
            direction = torch.where(norm > 0, grad / norm.clamp_min(1e-30), unit(torch.randn_like(grad)))
            random_directions += (norm == 0).sum()
            with torch.no_grad():
                delta.add_(step * direction)
                delta.copy_((x + delta).clamp_(0.0, 1.0) - x)
                delta.copy_(delta.renorm(p=2, dim=0, maxnorm=epsilon))
    return (x + delta).detach(), random_directions


def smoothed_ce_gradient(forward, inputs: torch.Tensor, leaf: torch.Tensor, targets: torch.Tensor,
                         noise: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ascent direction of the attacks on the smoothed classifier: the gradient with respect to `leaf` of
        sum_i -log(mean_j softmax(f(inputs_i + d_ij))[y_i])
    (the cross-entropy of the Monte-Carlo soft smoothed classifier; `inputs` [n, C, H, W] a function of
    `leaf`, noise d [n, m, C, H, W]), scaled per image as `per_image_gradient` scales it. Returns the scaled
    gradient and k [n]: `torch.ldexp(gradient, -k)` is the gradient itself."""
    def objective(logits: torch.Tensor) -> torch.Tensor:
        p = F.softmax(at_least_fp32(logits), dim=2).mean(dim=1)
        return F.nll_loss(torch.log(p.clamp_min(1e-20)), targets, reduction='sum')
    return per_image_gradient(forward, inputs.unsqueeze(1).add(noise), leaf, objective)


def per_image_gradient(forward, copies: torch.Tensor, leaf: torch.Tensor, objective) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradient with respect to `leaf` of `objective(logits)`, logits [n, m, C] = f(copies) for copies
    [n, m, C, H, W] (a function of `leaf`), each image's gradient multiplied by a power of two 2^k_i that fp16
    cannot round away: the one place where every attack here gets its gradient.

    Why: fp16 holds nothing below 6e-8, and a well-classified image's gradient at the logits (1e-8 and less)
    would round to zero inside a network run in fp16. Each image's gradient at the logits (float32, at most
    1 in size) is multiplied by the power of two that brings its largest entry into [1/2, 1) before it is
    sent back through the network: an image's direction is its own gradient's (eval mode: no image's gradient
    depends on another's), normalised by the attacks, so the factor changes nothing but the rounding; no
    entry can overflow fp16 (65504) at the logits, and a power of two leaves fp32 arithmetic bit for bit as
    it was (barring values below fp32's 1e-38, where it is more exact). Returns the scaled gradient and k
    [n]: `torch.ldexp(gradient, -k)` is the gradient itself."""
    n, m = copies.shape[:2]
    logits = forward(copies.flatten(0, 1)).view(n, m, -1)
    loss = objective(logits)
    at_logits, = torch.autograd.grad(loss, logits, retain_graph=True)
    k = _power_per_image(at_logits)
    grad, = torch.autograd.grad(logits, leaf, grad_outputs=torch.ldexp(at_logits, _per_image(k, at_logits)))
    return grad, k


def scaled_per_image(grad: torch.Tensor) -> torch.Tensor:
    """`grad` [n, ...] with each image's slice multiplied by the power of two 2^k, k >= 0, that brings its
    largest absolute entry into [1/2, 1) (an all-zero slice stays zero): exact, no rounding."""
    return torch.ldexp(grad, _per_image(_power_per_image(grad), grad))


def _power_per_image(grad):
    largest = grad.detach().flatten(1).abs().amax(dim=1)
    _, exponent = torch.frexp(largest)  # largest = mantissa * 2^exponent, mantissa in [1/2, 1)
    return (-exponent).clamp_min(0)


def _per_image(values, like):
    return values.view(-1, *[1] * (like.dim() - 1))


def soft_pgd(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor, *, step_size: float,
             num_steps: int, maxnorm: Optional[float] = None, keep_step: Optional[int] = None,
             per_image_mean: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Jeong et al.'s attack on the Monte-Carlo soft smoothed classifier (SmoothMix's `SmoothMix_PGD`, and
    the SmoothAdv attack of Consistency's --adv-training): returns `(x_adv, x_kept)`, detached.

    x: [n, C, H, W] in [0, 1]; noise: [n, m, C, H, W], the draws the training step uses too. From
    x^(0) = x, each of `num_steps` steps ascends -log(mean_j softmax(f(x^(t) + d_ij))[y_i]):
        g = grad / (||grad||_2 + 1e-8) per image;  x^(t+1) = x^(t) + step_size * g
        x^(t+1) = clamp(x + renorm(x^(t+1) - x, maxnorm), 0, 1)   (with maxnorm; else clamp(x^(t+1), 0, 1))
    (projection, then clamping: the order of their code). A gradient far below 1e-8 gives a step far
    below `step_size`, and a zero one none: unlike `smoothadv_attack`, no random direction.
    `per_image_mean`: the objective is the mean over the n images (Consistency's attack) rather than the
    sum (SmoothMix's), which matters only through that 1e-8. `x_kept` is x^(keep_step) (x when
    keep_step is None or not below num_steps). The model is in eval mode during the attack, as theirs.
    """
    n = x.shape[0]
    adv, kept = x, x
    with attacking(model) as forward:
        for t in range(num_steps):
            if t == keep_step:
                kept = adv
            leaf = adv.detach().requires_grad_(True)
            scaled, k = smoothed_ce_gradient(forward, leaf, leaf, targets, noise)
            grad = torch.ldexp(scaled, -_per_image(k, scaled))
            if per_image_mean:
                grad = grad / n
            norm = _per_image(grad.flatten(1).norm(dim=1), grad)
            with torch.no_grad():
                adv = leaf + step_size * grad / (norm + 1e-8)
                if maxnorm is not None:
                    adv = x + (adv - x).renorm(p=2, dim=0, maxnorm=maxnorm)
                adv = adv.clamp(0.0, 1.0)
    return adv.detach(), kept.detach()


def smoothmix_attack(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor, *,
                     step_size: float, num_steps: int, mix_step: int, warmup_factor: float,
                     maxnorm: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two ends of SmoothMix's mixup (Jeong et al. 2021): returns `(x_start, x_adv)`, detached.

    x_adv = x^(T), the last point of `soft_pgd` (T = num_steps, steps of `step_size`, unbounded unless
    `maxnorm`). x_start = x^(mix_step): x itself for mix_step 0 (SmoothMix), the one-step adversary
    x^(1) for mix_step 1, moved back to within step_size * mix_step * warmup_factor of x (L2), then
    clamped to [0, 1]; `warmup_factor` is min(1, epoch / warmup). mix_step must be below num_steps. The
    training step takes its classification term and its smoothed prediction at x_start too, as their code
    (which names x_start `inputs` from the attack on).
    """
    x_adv, kept = soft_pgd(model, x, targets, noise, step_size=step_size, num_steps=num_steps, maxnorm=maxnorm,
                           keep_step=mix_step)
    if mix_step == 0:
        return x, x_adv
    radius = step_size * mix_step * warmup_factor
    return (x + (kept - x).renorm(p=2, dim=0, maxnorm=radius)).clamp(0.0, 1.0), x_adv


def catrs_attack(model: nn.Module, x: torch.Tensor, smoothed: torch.Tensor, noise: torch.Tensor, *, epsilon: float,
                 num_steps: int) -> torch.Tensor:
    """CAT-RS's attack on the noise (Jeong, Kim and Shin 2023, `KL_PGD`): returns the attacked noise [n, m, C, H, W],
    detached.

    x: [n, C, H, W]; smoothed: [n, C], p_i, a Gaussian model's smoothed prediction at x_i; noise: [n, m, C, H,
    W], the draws d_ij of the training step. From d^(0) = d, each of `num_steps` steps ascends
        sum_i (1/m) sum_j KL(p_i || softmax(f(x_i + d_ij)))
    per copy: g = grad / (||grad||_2 + 1e-8); d' = d + (2 epsilon / num_steps) g; d' = d^(0) + renorm(d' -
    d^(0), epsilon) (an L2 ball around each original draw); then d' is given back the mean and the root mean
    square of its original draw (per copy, over its C H W entries: (d' - mean(d')) / rms(d') * rms(d^(0)) +
    mean(d^(0)), as their code), which can move it slightly off the ball. No random start, no clamping of
    x + d to [0, 1]: the noise, not the image, is attacked."""
    if epsilon <= 0 or num_steps <= 0:
        return noise
    n, m = noise.shape[:2]
    flat = (lambda v: v.flatten(2))
    original = noise.detach()
    mean0 = flat(original).mean(dim=2)[..., None, None, None]
    rms0 = flat(original).pow(2).mean(dim=2).sqrt()[..., None, None, None]
    step = 2.0 * epsilon / num_steps
    p = smoothed
    moved = original
    with attacking(model) as forward:
        for _ in range(num_steps):
            leaf = moved.detach().requires_grad_(True)

            def objective(logits: torch.Tensor) -> torch.Tensor:
                q = F.log_softmax(at_least_fp32(logits), dim=2)
                return ((_xlogx(p)[:, None, :] - p[:, None, :] * q).sum(dim=2) / m).sum()
            scaled, k = per_image_gradient(forward, x.unsqueeze(1) + leaf, leaf, objective)
            grad = torch.ldexp(scaled, -_per_image(k, scaled))
            with torch.no_grad():
                norm = flat(grad).norm(dim=2)[..., None, None, None]
                moved = leaf + step * grad / (norm + 1e-8)
                moved = original + (moved - original).flatten(0, 1).renorm(p=2, dim=0, maxnorm=epsilon).view_as(moved)
                mean = flat(moved).mean(dim=2)[..., None, None, None]
                rms = flat(moved).pow(2).mean(dim=2).sqrt()[..., None, None, None]
                moved = (moved - mean) / rms * rms0 + mean0
    return moved.detach()
