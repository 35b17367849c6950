"""Consistency regularization (Jeong and Shin, NeurIPS 2020): cross-entropy on m noisy copies plus lambda times their
KL divergence from their mean prediction and eta times its entropy (`methods.losses.consistency_loss`); with
--adv_training on the SmoothAdv points of their attack (`methods.attacks.soft_pgd`), with the same draws."""
from types import SimpleNamespace

from methods.attacks import soft_pgd
from methods.base import Method, Param, Step, epsilon_at, noisy
from methods.losses import consistency_loss
from plumbing.flagtypes import nonneg_float, positive_int, radius_type

def hyper(args, epoch):
    return SimpleNamespace(lbd=args.lbd, eta=args.eta, adv=args.adv_training,
                           epsilon=epsilon_at(epoch, args.epsilon, args.warmup), num_steps=args.num_steps)


def step(model, x, y, noise, hyper, batch):
    if hyper.adv and hyper.epsilon > 0:
        x, _ = soft_pgd(model, x, y, noise, step_size=2.0 * hyper.epsilon / hyper.num_steps,
                        num_steps=hyper.num_steps, maxnorm=hyper.epsilon, per_image_mean=True)
    logits = noisy(model, x, noise)
    return Step(*consistency_loss(logits, y, lbd=hyper.lbd, eta=hyper.eta), logits)


def log(args, epoch, hyper, sums, images):
    return {'epsilon': hyper.epsilon} if hyper.adv else {}


METHOD = Method(
    name='consistency', summary='Jeong and Shin: cross-entropy on m copies + lambda x KL(mean prediction, each copy) '
                                '+ eta x entropy of the mean; --adv_training on SmoothAdv points',
    flags={'num_noise_vec': Param(1, 'm, the noisy copies (the authors\' default 1 leaves only the entropy term; '
                                     'their runs use 2 or 4)', positive_int),
           'lbd': Param(10.0, 'lambda, the weight of the KL term', nonneg_float),
           'eta': Param(0.5, 'the weight of the entropy term', nonneg_float),
           'adv_training': Param(False, 'on SmoothAdv points (their --adv-training): their PGD attack of --num_steps '
                                        'steps in the --epsilon ball, on the same m noise draws'),
           'epsilon': Param(2.0, 'with --adv_training: L2 radius of the attack (pixel units; A/B is accepted)',
                            radius_type, requires='adv_training'),
           'num_steps': Param(4, 'with --adv_training: attack steps', positive_int, requires='adv_training'),
           'warmup': Param(10, 'with --adv_training: epochs over which epsilon grows to --epsilon', positive_int,
                           requires='adv_training')},
    copies='num_noise_vec', step=step, hyper=hyper, log=log,
    scaling=lambda args: ('lbd', 'eta') + (('epsilon',) if args.adv_training else ()))
