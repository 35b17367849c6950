"""MACER (Zhai et al., ICLR 2020, Algorithm 1): the cross-entropy of the mean softmax of k noisy copies plus lambda
times a hinge on the soft certified radius (the loss: `macer.macer_loss`; docs/METHOD.md, "MACER")."""
from types import SimpleNamespace

from macer import hinge_kept, macer_loss
from methods.base import Method, Param, Step, noisy
from plumbing.flagtypes import nonneg_float, nonneg_int, positive_float, positive_int


def lambda_at(epoch, lbd, lbd_after):
    """lambda of epoch `epoch` (1-based): 0 for the first `lbd_after` epochs, then `lbd` (the "dynamic" lambda)."""
    return 0.0 if epoch <= lbd_after else lbd


def hyper(args, epoch):
    return SimpleNamespace(sigma=args.sigma, lbd=lambda_at(epoch, args.lbd, args.lbd_after), gamma=args.gamma,
                           beta=args.beta)


def step(model, x, y, noise, hyper, batch):
    logits = noisy(model, x, noise)
    loss, classification, robustness = macer_loss(logits, y, sigma=hyper.sigma, lbd=hyper.lbd, gamma=hyper.gamma,
                                                  beta=hyper.beta)
    kept = hinge_kept(logits, y, gamma=hyper.gamma, beta=hyper.beta).sum()
    return Step(loss, classification, robustness, logits, {'hinge_kept': kept})


def log(args, epoch, hyper, sums, images):
    return {'lambda': hyper.lbd, 'hinge_kept': sums['hinge_kept'] / images}


METHOD = Method(
    name='macer', summary='Zhai et al.: cross-entropy of the mean softmax of k copies + lambda x hinge on the soft '
                          'certified radius',
    flags={'gauss_num': Param(16, 'k, noisy copies per image', positive_int),
           'lbd': Param(12.0, 'lambda, the weight of the robustness term', nonneg_float),
           'lbd_after': Param(0, 'lambda is 0 for the first LBD_AFTER epochs, then --lbd (the "dynamic" lambda of '
                                 'sigma 1.00: the first lr milestone)', nonneg_int),
           'gamma': Param(8.0, 'the hinge on xi (radius sigma * gamma / 2)', positive_float)},
    copies='gauss_num', figures=('hinge_kept',), step=step, hyper=hyper, log=log,
    scaling=lambda args: ('lbd',), uses_beta=True)
