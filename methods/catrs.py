"""CAT-RS (Jeong, Kim and Shin, AAAI 2023, "Confidence-aware Training of Smoothed Classifiers for Certified
Robustness"; their code alinlab/smoothing-catrs@d4bc576e `code/train_catrs.py`): per image, a binomial draw on its
smoothed confidence chooses how many of its m noisy copies it trains on (the easiest ones, by cross-entropy); where
it accepts all m, lambda times the KL divergence of the worst copy, after an attack on the noise, from the smoothed
prediction of a Gaussian model (docs/METHOD.md, "CAT-RS").

The smoothed predictions p_i of the training images come from a certification of the training set by this tool
(`--task test --split train`, hard mode: the vote shares of its N0 selection draws, `rs.runs.selection_shares`),
which is sharded and resumable as every certification is; their code always reads them, as the KL target, and with
--confidence_mask also as the confidence the draw is made on (without it, the share of the m copies the network
itself gets right).
"""
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from methods.attacks import catrs_attack
from methods.base import Method, Param, Step, noisy
from methods.losses import catrs_loss
from plumbing.flagtypes import nonneg_float, positive_int, radius_type


def hyper(args, epoch):
    # their --warmup: from (0-based) epoch W on, the attack radius is doubled (their ImageNet run only)
    double = args.double_epsilon_after is not None and epoch > args.double_epsilon_after
    return SimpleNamespace(lbd=args.lbd, epsilon=args.epsilon * (2.0 if double else 1.0), num_steps=args.num_steps,
                           confidence_mask=args.confidence_mask)


def prepare(args, dataset):
    """The smoothed predictions of the training images, [images, C] float32 on the CPU: the vote shares of the
    certification --smoothed_predictions names, checked as every reader checks a run."""
    from data import NUM_CLASSES
    from rs.runs import selection_shares
    full = getattr(dataset, 'dataset', dataset)  # --train_images: a Subset of the first images, indexed as the whole
    shares = selection_shares(args.smoothed_predictions, args.dataset, len(full), NUM_CLASSES[args.dataset])
    return torch.from_numpy(shares).float()


def step(model, x, y, noise, hyper, batch):
    index, = batch
    p = hyper.prepared[index].to(x.device, non_blocking=True)  # [n, C]: the Gaussian model's smoothed prediction
    m = noise.shape[1]
    logits = noisy(model, x, noise)  # train mode, the graph of the cross-entropy term
    with torch.no_grad():
        votes = F.one_hot(logits.argmax(dim=2), logits.shape[2]).to(p.dtype).mean(dim=1)
    attacked = noisy(model, x, catrs_attack(model, x, p, noise, epsilon=hyper.epsilon, num_steps=hyper.num_steps))
    confidence = (p if hyper.confidence_mask else votes).gather(1, y[:, None]).squeeze(1).clamp(0.0, 1.0)
    # after the attack, as their code: K_i ~ Binomial(m, confidence_i), at least 1
    accepted = torch.binomial(torch.full_like(confidence, float(m)), confidence).long().clamp_(min=1)
    loss, classification, robustness = catrs_loss(logits, attacked, y, p, accepted, lbd=hyper.lbd)
    return Step(loss, classification, robustness, logits,
                {'all_accepted': (accepted == m).sum(), 'accepted': accepted.sum()})


def log(args, epoch, hyper, sums, images):
    return {'epsilon': hyper.epsilon, 'all_accepted': sums['all_accepted'] / images,
            'accepted_copies': sums['accepted'] / images}


def check(args):
    if not args.smoothed_predictions:
        return ('--method catrs trains towards the smoothed predictions of a Gaussian model on the training set: '
                'certify one with --task test --split train --mode hard (their protocol: the sigma 0.25 Gaussian '
                'model, --N0 10000) and give its NAME.json as --smoothed_predictions')
    return None


METHOD = Method(
    name='catrs', summary='Jeong, Kim and Shin: the easiest of m copies, as many as a binomial draw on the smoothed '
                          'confidence accepts; where all are, lambda x the worst KL from the smoothed prediction '
                          'under an attack on the noise',
    flags={'num_noise_vec': Param(4, 'm, noise draws per image', positive_int),
           'epsilon': Param(1.0, 'L2 radius of the attack on each noise draw, pixel units (their --eps 256 of 1/256 '
                                 'units; A/B is accepted)', radius_type),
           'num_steps': Param(4, 'attack steps T (each of 2 epsilon / T)', positive_int),
           'lbd': Param(1.0, 'lambda, the weight of the KL term', nonneg_float),
           'confidence_mask': Param(False, 'draw the number of copies on the Gaussian model\'s smoothed confidence '
                                           'instead of the network\'s own (their --confidence_mask)'),
           'smoothed_predictions': Param(None, 'NAME.json of a certification of the training set (--task test --split '
                                               'train, hard mode) whose selection votes are the smoothed predictions',
                                         str, 'NAME.json'),
           'double_epsilon_after': Param(None, 'after this many epochs the attack radius is doubled (their --warmup; '
                                               'default: never)', positive_int)},
    copies='num_noise_vec', figures=('all_accepted', 'accepted'), step=step, hyper=hyper, log=log, check=check,
    prepare=prepare, needs_index=True, scaling=lambda args: ('lbd', 'epsilon'))
