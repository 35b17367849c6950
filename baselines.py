"""The methods MACER is compared with (docs/METHOD.md, "The methods MACER is compared with"), in the shape of
`macer.macer_loss`: each loss a pure function of logits, and the attacks that choose where the logits are taken.

- Gaussian augmentation (Cohen et al. 2019): cross-entropy on noisy copies.
- SmoothAdv (Salman et al. 2019): PGD against the smoothed soft classifier, then cross-entropy
  on all m noisy copies of the adversarial point, with the noise of the attack.
- Stability training (Li et al. 2019, as Jeong and Shin 2020 ran it for the published comparisons):
  cross-entropy on the clean image plus lambda times the cross-entropy of a noisy copy's prediction
  against the clean prediction.
- Consistency regularization (Jeong and Shin 2020): cross-entropy on m noisy copies plus lambda times
  their KL divergence from their mean prediction and eta times that mean's entropy; on SmoothAdv
  points with their --adv-training.
- SmoothMix (Jeong, Park, Kim, Lee, Kim and Shin 2021): an unbounded attack on the smoothed soft
  classifier, then the mixup of the image and its adversarial point, trained towards the same mixup
  of the image's smoothed prediction and the uniform distribution.

The three newer methods follow their authors' public code, which produced their published numbers
(read at jh-jeong/smoothing-consistency@a11954aa `code/train_stab.py`, `code/consistency.py`,
`code/train_consistency.py`; jh-jeong/smoothmix@cb1fd330 `code/train.py`); docs/METHOD.md gives each
formula and says where the code departs from its paper.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from macer import at_least_fp32


def noisy_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over all n * k copies: logits [n, k, C], targets [n]; at least float32."""
    n, k, C = logits.shape
    return F.cross_entropy(at_least_fp32(logits).reshape(n * k, C), targets.repeat_interleave(k))


def gaussian_loss(logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy averaged over every noisy copy: returns `(loss, classification, robustness)`.

    logits: [n, k, C] for k noisy copies of each of n images; targets: [n]. Cohen et al. 2019
    train on one copy per image (k = 1); SmoothAdv's training step is this loss on its m copies
    (Salman et al.'s `--train-multi-noise`). The robustness part is 0.
    """
    ce = noisy_cross_entropy(logits, targets)
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
    # a plumbing.devices.Runner under DDP attacks through its unsynchronised network: no parameter gradients here
    forward = getattr(model, 'local', model)
    unit = (lambda v: v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1)))
    delta = torch.zeros_like(x, requires_grad=True)
    step = 2.0 * epsilon / num_steps
    try:
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
    finally:
        model.train(was_training)
    return (x + delta).detach(), random_directions


def smoothed_ce_gradient(forward, inputs: torch.Tensor, leaf: torch.Tensor, targets: torch.Tensor,
                         noise: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ascent direction every attack here follows: the gradient with respect to `leaf` of
        sum_i -log(mean_j softmax(f(inputs_i + d_ij))[y_i])
    (the cross-entropy of the Monte-Carlo soft smoothed classifier; `inputs` [n, C, H, W] a function
    of `leaf`, noise d [n, m, C, H, W]), each image's gradient multiplied by a power of two 2^k_i that
    fp16 cannot round away (`scaled_per_image`; the reason is in `smoothadv_attack`). Returns the
    scaled gradient and k [n]: `torch.ldexp(gradient, -k)` is the gradient itself (exactly, in float32
    and float64 arithmetic, barring values below their smallest normal numbers).
    """
    n, m = noise.shape[:2]
    logits = forward(inputs.unsqueeze(1).add(noise).flatten(0, 1)).view(n, m, -1)
    p = F.softmax(at_least_fp32(logits), dim=2).mean(dim=1)
    loss = F.nll_loss(torch.log(p.clamp_min(1e-20)), targets, reduction='sum')
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


def _xlogx(p):
    # p log p with 0 log 0 = 0 and a zero gradient there (PyTorch's kl_div before 1.13, which the authors
    # ran; since then its gradient at a target entry of exactly 0 is not finite): a mean softmax entry
    # can underflow to 0 in float32 once a network is confident
    return torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), 0.0)


def stability_loss(clean_logits: torch.Tensor, noisy_logits: torch.Tensor, targets: torch.Tensor, *,
                   lbd: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stability training (Li et al. 2019) as `train_stab.py` computes it: returns `(loss, classification,
    robustness)`.

    clean_logits: [n, C], f(x_i); noisy_logits: [n, k, C], f(x_i + d_ij) (k = 1 in the authors' code);
    targets: [n]; lbd: lambda. With p = softmax(f(x_i)) and q_ij = softmax(f(x_i + d_ij)):
        classification = (1/n) sum_i CE(f(x_i), y_i)        (on the clean image)
        robustness = lbd * (1/(n k)) sum_ij [-sum_c p_c log q_ij,c]
        loss = classification + robustness
    The stability term is a cross-entropy with the clean prediction as its soft target, KL(p || q) + H(p),
    and neither side is detached: the gradient reaches both forward passes.
    """
    clean, noisy = at_least_fp32(clean_logits), at_least_fp32(noisy_logits)
    classification = F.cross_entropy(clean, targets)
    robustness = lbd * -(F.softmax(clean, dim=1)[:, None, :] * F.log_softmax(noisy, dim=2)).sum(dim=2).mean()
    return classification + robustness, classification, robustness


def consistency_loss(logits: torch.Tensor, targets: torch.Tensor, *, lbd: float,
                     eta: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Consistency regularization (Jeong and Shin 2020, `consistency_loss`, its default form): returns
    `(loss, classification, robustness)`.

    logits: [n, m, C] for m noisy copies x_i + d_ij of each image; targets [n]; lbd: lambda, the
    weight of the KL term; eta: the weight of the entropy term. With p_ij = softmax(logits_ij) and
    the mean p_i = (1/m) sum_j p_ij (not detached):
        classification = (1/(n m)) sum_ij CE(logits_ij, y_i)
        robustness = (1/n) sum_i [lbd * (1/m) sum_j KL(p_i || p_ij) + eta * H(p_i)]
        loss = classification + robustness
    KL takes 0 log 0 = 0; H takes log(max(p, 1e-20)), as the code. With m = 1 (the code's default; every
    published run uses 2 or 4) the KL term is 0 and eta * H(p_i1) remains.
    """
    logits = at_least_fp32(logits)
    classification = noisy_cross_entropy(logits, targets)
    p_mean = F.softmax(logits, dim=2).mean(dim=1)
    kl = (_xlogx(p_mean)[:, None, :] - p_mean[:, None, :] * F.log_softmax(logits, dim=2)).sum(dim=2).mean(dim=1)
    entropy = -(p_mean * torch.log(p_mean.clamp_min(1e-20))).sum(dim=1)
    robustness = (lbd * kl + eta * entropy).mean()
    return classification + robustness, classification, robustness


def smoothmix_loss(logits: torch.Tensor, mixed_logits: torch.Tensor, targets: torch.Tensor, lam: torch.Tensor, *,
                   eta: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SmoothMix's objective (Jeong et al. 2021, `smoothmix/code/train.py`): returns `(loss, classification,
    robustness)`.

    logits: [n, m, C], f(x_start_i + d_ij), the copies of the mixup's clean end (`smoothmix_attack`: the image
    itself, or the one-step adversary); mixed_logits: [n, m, C], f(x_mix_i + d_ij) with the same d_ij and
    x_mix_i = (1 - lam_i) x_start_i + lam_i x_adv_i; lam: [n], the mixing
    coefficients (drawn from U(0, 1/2)); targets [n]; eta: this epoch's weight of the mixup term (the
    --eta times the warm-up factor). With the smoothed soft prediction p_i = (1/m) sum_j softmax(logits_ij)
    (not detached) and the target t_i = (1 - lam_i) p_i + lam_i / C (the same mixup of p_i and the
    uniform distribution):
        classification = (1/(n m)) sum_ij CE(logits_ij, y_i)
        robustness = eta * (1/(n m)) sum_ij 1[argmax p_i = y_i] KL(t_i || softmax(mixed_logits_ij))
        loss = classification + robustness
    The mask is a constant; the mean runs over all n m terms, masked ones counting as 0.
    """
    logits, mixed_logits = at_least_fp32(logits), at_least_fp32(mixed_logits)
    C = logits.shape[2]
    classification = noisy_cross_entropy(logits, targets)
    p_mean = F.softmax(logits, dim=2).mean(dim=1)
    lam = lam.to(p_mean.dtype)[:, None]
    target = (1 - lam) * p_mean + lam / C
    kl = (_xlogx(target)[:, None, :] - target[:, None, :] * F.log_softmax(mixed_logits, dim=2)).sum(dim=2)
    with torch.no_grad():
        right = (p_mean.argmax(dim=1) == targets).to(kl.dtype)
    robustness = eta * (right[:, None] * kl).mean()
    return classification + robustness, classification, robustness


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
    was_training = model.training
    model.eval()
    forward = getattr(model, 'local', model)  # under DDP: no parameter gradients here
    n = x.shape[0]
    adv, kept = x, x
    try:
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
    finally:
        model.train(was_training)
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
