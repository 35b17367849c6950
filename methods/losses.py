"""The losses of the methods MACER is compared with, in the shape of `macer.macer_loss`: each a pure function of
logits (and their targets) that returns `(loss, classification, robustness)`; no optimiser, printing or host
synchronisation. Where the logits are taken (noise, attacks) is each method's step (`methods/`), the attacks are
`methods.attacks`.

- Gaussian augmentation (Cohen et al. 2019): cross-entropy on noisy copies.
- Stability training (Li et al. 2019, as Jeong and Shin 2020 ran it for the published comparisons):
  cross-entropy on the clean image plus lambda times the cross-entropy of a noisy copy's prediction
  against the clean prediction.
- Consistency regularization (Jeong and Shin 2020): cross-entropy on m noisy copies plus lambda times
  their KL divergence from their mean prediction and eta times that mean's entropy.
- SmoothMix (Jeong, Park, Kim, Lee, Kim and Shin 2021): the mixup of the image and its adversarial point,
  trained towards the same mixup of the image's smoothed prediction and the uniform distribution.
- CAT-RS (Jeong, Kim and Shin 2023): the cross-entropy of the easiest of m noisy copies, as many as a
  binomial draw on the smoothed confidence accepts, and, where it accepts all m, lambda times the worst
  KL divergence of an attacked copy from the smoothed prediction.

The newer methods follow their authors' public code, which produced their published numbers (read at
jh-jeong/smoothing-consistency@a11954aa `code/train_stab.py`, `code/consistency.py`,
`code/train_consistency.py`; jh-jeong/smoothmix@cb1fd330 `code/train.py`; alinlab/smoothing-catrs@d4bc576e
`code/train_catrs.py`); docs/METHOD.md gives each formula and says where the code departs from its paper.
"""
from typing import Tuple

import torch
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


def catrs_loss(logits: torch.Tensor, attacked_logits: torch.Tensor, targets: torch.Tensor, smoothed: torch.Tensor,
               accepted: torch.Tensor, *, lbd: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CAT-RS's objective (Jeong, Kim and Shin 2023, `train_catrs.py`): returns `(loss, classification,
    robustness)`.

    logits: [n, m, C], f(x_i + d_ij) for m noise draws; attacked_logits: [n, m, C], f(x_i + d*_ij), the same
    draws moved by the attack on the noise (`methods.attacks.catrs_attack`); targets [n]; smoothed: [n, C], p_i,
    the smoothed prediction of a Gaussian model at x_i (vote shares, each row summing to 1); accepted: [n],
    K_i in 1..m, how many copies image i trains on (a binomial draw on its smoothed confidence); lbd: lambda.
    With c_i(1) <= ... <= c_i(m) the sorted cross-entropies CE(logits_ij, y_i):
        classification = (1/n) sum_i (1/m) sum_{j <= K_i} c_i(j)       (divided by m, not K_i: their code)
        robustness = (1/n) sum_i lbd * 1[K_i = m] * max_j KL(p_i || softmax(attacked_logits_ij))
        loss = classification + robustness
    KL takes 0 log 0 = 0. The masks and the target p_i are constants.
    """
    logits, attacked = at_least_fp32(logits), at_least_fp32(attacked_logits)
    n, m, C = logits.shape
    ce = F.cross_entropy(logits.reshape(n * m, C), targets.repeat_interleave(m), reduction='none').view(n, m)
    easiest, _ = ce.sort(dim=1)
    mask = (torch.arange(m, device=ce.device)[None, :] < accepted[:, None]).to(ce.dtype)
    classification = ((easiest * mask).sum(dim=1) / m).mean()
    p = smoothed.to(attacked.dtype)
    kl = (_xlogx(p)[:, None, :] - p[:, None, :] * F.log_softmax(attacked, dim=2)).sum(dim=2)
    worst, _ = kl.max(dim=1)
    robustness = (lbd * worst * (accepted == m).to(worst.dtype)).mean()
    return classification + robustness, classification, robustness
