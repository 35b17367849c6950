"""The hot loops as the public MACER code runs them, rewritten here for comparison only.

fp32, eager, default memory format, `torch.no_grad` instead of inference mode, the image repeated
on the device, counts tallied on the host in a Python loop, the loss's parts read with `.item()`
every step. `bench.py` times these beside this project's paths in the same run, so each speed-up
is a ratio measured on the same machine at the same moment.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions.normal import Normal


def sample_noise(model, x, num, batch_size, sigma, num_classes=10):
    """The public code's `Smooth._sample_noise` in hard mode: returns the class counts (numpy)."""
    with torch.no_grad():
        counts = np.zeros(num_classes, dtype=int)
        while num > 0:
            this_batch = min(batch_size, num)
            num -= this_batch
            batch = x.repeat((this_batch, 1, 1, 1))
            noise = torch.randn_like(batch) * sigma
            predictions = model(batch + noise).argmax(1)
            for idx in predictions.cpu().numpy():  # the host-side tally
                counts[idx] += 1
        return counts


def macer_objective(outputs, targets, *, sigma, lbd, beta, gamma):
    """The public code's loss from the logits [n, k, C], step for step (Normal.icdf, boolean masks, `.item()`)."""
    m = Normal(torch.tensor([0.0], device=outputs.device), torch.tensor([1.0], device=outputs.device))
    n = outputs.shape[0]
    log_p = torch.log(F.softmax(outputs, dim=2).mean(1) + 1e-10)
    classification = F.nll_loss(log_p, targets, reduction='sum')
    classification.item()
    q = F.softmax(outputs * beta, dim=2).mean(1)
    top2, top2_idx = torch.topk(q, 2)
    correct = top2_idx[:, 0] == targets
    out0, out1 = top2[correct, 0], top2[correct, 1]
    margin = m.icdf(out1) - m.icdf(out0)
    keep = ~torch.isnan(margin) & ~torch.isinf(margin) & (torch.abs(margin) <= gamma)
    out0, out1 = out0[keep], out1[keep]
    robustness = (m.icdf(out1) - m.icdf(out0) + gamma).sum() * sigma / 2
    robustness.item()
    return (classification + lbd * robustness) / n, classification / n, robustness / n


def macer_step(model, optimizer, inputs, targets, *, sigma, lbd, gauss_num, beta, gamma, num_classes=10):
    """One minibatch of the public code's `macer_train`."""
    n = len(inputs)
    new_shape = [n * gauss_num, *inputs[0].shape]
    inputs = inputs.repeat((1, gauss_num, 1, 1)).view(new_shape)
    noisy = inputs + torch.randn_like(inputs) * sigma
    outputs = model(noisy).reshape((n, gauss_num, num_classes))
    loss = macer_objective(outputs, targets, sigma=sigma, lbd=lbd, beta=beta, gamma=gamma)[0]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def gaussian_step(model, optimizer, inputs, targets, *, sigma):
    """One minibatch of Cohen et al.'s training: one noisy copy, cross-entropy, `.item()` for the meters."""
    outputs = model(inputs + torch.randn_like(inputs) * sigma)
    loss = F.cross_entropy(outputs, targets)
    loss.item()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
