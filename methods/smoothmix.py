"""SmoothMix (Jeong et al., NeurIPS 2021): an unbounded attack on the soft smoothed classifier
(`methods.attacks.smoothmix_attack`), then the mixup of the image (or the one-step adversary) and the adversary
trained towards the same mixup of the smoothed prediction and the uniform one (`methods.losses.smoothmix_loss`)."""
from types import SimpleNamespace

import torch

from methods.attacks import smoothmix_attack
from methods.base import Method, Param, Step, noisy, warmup_at
from methods.losses import smoothmix_loss
from plumbing.flagtypes import distance, nonneg_float, nonneg_int, positive_int


def hyper(args, epoch):
    w = warmup_at(epoch, args.warmup)
    return SimpleNamespace(eta=args.eta * w, warmup_factor=w, step_size=args.step_size, num_steps=args.num_steps,
                           mix_step=args.mix_step, maxnorm=args.maxnorm)


def step(model, x, y, noise, hyper, batch):
    n = x.shape[0]
    lam = torch.rand(n, device=x.device, dtype=x.dtype).div_(2)  # drawn after the noise, as their code
    x_start, x_adv = smoothmix_attack(model, x, y, noise, step_size=hyper.step_size, num_steps=hyper.num_steps,
                                      mix_step=hyper.mix_step, warmup_factor=hyper.warmup_factor, maxnorm=hyper.maxnorm)
    logits = noisy(model, x_start, noise)  # the clean side: x itself, or the one-step adversary (their `inputs`)
    lam_ = lam.view(-1, *[1] * (x.dim() - 1))
    mixed = noisy(model, (1 - lam_) * x_start + lam_ * x_adv, noise)
    return Step(*smoothmix_loss(logits, mixed, y, lam, eta=hyper.eta), logits)


def log(args, epoch, hyper, sums, images):
    return {'eta': hyper.eta}


def check(args):
    if args.mix_step >= args.num_steps:
        return (f'--mix_step {args.mix_step} must be below --num_steps {args.num_steps}: the attack has no step '
                f'{args.mix_step} (0 starts the mixup at the image, 1 at the one-step adversary)')
    return None


METHOD = Method(
    name='smoothmix', summary='Jeong et al.: the mixup of image and adversary trained towards the mixup of the smoothed '
                              'prediction and the uniform one',
    flags={'num_noise_vec': Param(1, 'm, noise draws per image, shared by the attack, the clean and the mixed copies',
                                  positive_int),
           'num_steps': Param(8, 'attack steps T', positive_int),
           'step_size': Param(1.0, 'alpha, the L2 length of each attack step in pixel units (the attack reaches up to '
                                   '--num_steps x alpha from the image)', distance),
           'eta': Param(1.0, 'the weight of the mixup term', nonneg_float),
           'mix_step': Param(0, 'the attack step whose point is the clean end of the mixup: 0, the image (SmoothMix); '
                                '1, the one-step adversary (within alpha of the image, less during warm-up)',
                             nonneg_int),
           'warmup': Param(10, 'epochs over which eta and the one-step radius grow to theirs', positive_int),
           'maxnorm': Param(None, 'keep the attack within this L2 distance of the image (the authors\' restriction '
                                  'study; default: unbounded, as every published run)', distance)},
    copies='num_noise_vec', step=step, hyper=hyper, log=log, check=check, scaling=lambda args: ('step_size', 'eta'))
