"""Gaussian augmentation (Cohen et al., ICML 2019): cross-entropy on k noisy copies of each image (one by
default, as their code); the loss: `methods.losses.gaussian_loss`."""
from types import SimpleNamespace

from methods.base import Method, Param, Step, noisy
from methods.losses import gaussian_loss
from plumbing.flagtypes import positive_int


def step(model, x, y, noise, hyper, batch):
    logits = noisy(model, x, noise)
    return Step(*gaussian_loss(logits, y), logits)


METHOD = Method(name='gaussian', summary='Cohen et al.: noise augmentation, cross-entropy on noisy copies',
                flags={'gauss_num': Param(1, 'k, noisy copies per image', positive_int)},
                copies='gauss_num', step=step, hyper=lambda args, epoch: SimpleNamespace())
