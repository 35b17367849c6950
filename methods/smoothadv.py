"""SmoothAdv (Salman et al., NeurIPS 2019): PGD on the soft smoothed classifier with m noise draws (the attack:
`methods.attacks.smoothadv_attack`), then cross-entropy on the m noisy copies of the adversarial point, with the
draws of the attack."""
from types import SimpleNamespace

from methods.attacks import smoothadv_attack
from methods.base import Method, Param, Step, epsilon_at, noisy
from methods.losses import gaussian_loss
from plumbing.flagtypes import positive_int, radius_type


def hyper(args, epoch):
    return SimpleNamespace(epsilon=epsilon_at(epoch, args.epsilon, args.warmup), num_steps=args.num_steps)


def step(model, x, y, noise, hyper, batch):
    adversarial, random_directions = smoothadv_attack(model, x, y, noise, epsilon=hyper.epsilon,
                                                      num_steps=hyper.num_steps)
    logits = noisy(model, adversarial, noise)
    return Step(*gaussian_loss(logits, y), logits, {'random_directions': random_directions})


def line(entry):
    """The epoch's line names the attack steps that took a random direction for want of a gradient."""
    count = entry.get('random_directions')
    return f'  random attack directions {count} (zero gradient)' if count else ''


def log(args, epoch, hyper, sums, images):
    return {'epsilon': hyper.epsilon, 'random_directions': int(sums['random_directions'])}


METHOD = Method(
    name='smoothadv', summary='Salman et al.: PGD on the smoothed soft classifier, then cross-entropy on its m copies',
    flags={'num_noise_vec': Param(1, 'm, noise draws per image, shared by the attack and the training step',
                                  positive_int),
           'epsilon': Param(0.25, 'L2 radius of the attack in pixel units of [0, 1] images; A/B is accepted (Salman '
                                  'et al. give it in 1/256 units: their 64 is 64/256 = 0.25)', radius_type),
           'num_steps': Param(10, 'attack steps T', positive_int),
           'warmup': Param(1, 'epochs over which epsilon grows linearly to --epsilon', positive_int)},
    copies='num_noise_vec', figures=('random_directions',), step=step, hyper=hyper, log=log,
    scaling=lambda args: ('epsilon',), line=line)
