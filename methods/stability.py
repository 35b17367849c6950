"""Stability training (Li et al. 2019, as Jeong and Shin ran it): cross-entropy on the clean image plus lambda times
the cross-entropy of a noisy copy's prediction against the clean prediction (`methods.losses.stability_loss`)."""
from types import SimpleNamespace

from methods.base import Method, Param, Step, noisy
from methods.losses import stability_loss
from plumbing.flagtypes import nonneg_float


def step(model, x, y, noise, hyper, batch):
    # two forward passes in train mode, in the authors' order: BatchNorm sees the clean batch, then the noisy one
    clean = model(x)
    logits = noisy(model, x, noise)
    return Step(*stability_loss(clean, logits, y, lbd=hyper.lbd), logits)


METHOD = Method(
    name='stability', summary='Li et al.\'s stability training: cross-entropy on the clean image + lambda x '
                              'CE(clean prediction, noisy prediction)',
    flags={'lbd': Param(2.0, 'lambda, the weight of the stability term', nonneg_float)},
    step=step, hyper=lambda args, epoch: SimpleNamespace(lbd=args.lbd), scaling=lambda args: ('lbd',))
