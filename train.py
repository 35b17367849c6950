"""Training: MACER (Algorithm 1), Gaussian augmentation and SmoothAdv behind one loop.

`run_training` owns the epoch loop: build or resume the run, then per epoch `train_one_epoch`,
the learning-rate step, a log line, a checkpoint and, on the certification schedule, `--task
test`'s certification of the model in hard mode. Checkpoints hold everything needed to continue
exactly (model, optimiser, scheduler, epoch, RNG states, arguments, the log so far) and are
written atomically.
"""
import json
import os
import random
import sys
import time
import warnings

import numpy as np
import torch
from tqdm import tqdm

from baselines import gaussian_loss, smoothadv_attack
from checkpoint import FORMAT, fit_model, read_checkpoint, save_checkpoint
from common import UsageError, atomic_write_text, remove_stale_temporaries
from data import NUM_CLASSES, get_dataset
from macer import macer_loss
from model import base_network, build_model

METHODS = ('macer', 'gaussian', 'smoothadv')

# the arguments that make a run what it is: resuming with any of them changed would silently
# train a different model, so it is refused (--epochs, the certification and I/O flags may change)
IDENTITY = ('method', 'dataset', 'arch', 'normalize', 'sigma', 'lbd', 'lbd_after', 'gamma', 'beta', 'gauss_num',
            'num_noise_vec', 'epsilon', 'num_steps', 'warmup', 'batch_size', 'lr', 'momentum', 'weight_decay',
            'lr_milestones', 'lr_factor', 'seed', 'precision')

LOG_NAME = 'log.jsonl'
LATEST = 'latest.pth'


class Diverged(UsageError):
    """The loss became NaN or infinite."""


def lambda_at(epoch, lbd, lbd_after):
    """lambda of epoch `epoch` (1-based): 0 for the first `lbd_after` epochs, then `lbd` (the "dynamic" lambda)."""
    return 0.0 if epoch <= lbd_after else lbd


def epsilon_at(epoch, epsilon, warmup):
    """SmoothAdv's attack radius in epoch `epoch` (1-based): min(eps, epoch * eps / warmup) (PAPER.md section 5)."""
    return min(epsilon, epoch * epsilon / warmup)


def is_cert_epoch(epoch, cert_from, cert_every):
    """The public code's schedule, generalised: epochs cert_from, cert_from + cert_every, ..."""
    return epoch >= cert_from and (epoch - cert_from) % cert_every == 0


def training_step(model, x, y, *, method, epoch, args):
    """One minibatch of any method: returns `(loss, classification, robustness, logits [n, k, C])`.

    MACER: k = --gauss_num noisy copies, `macer_loss`. Gaussian: k copies (1 by default),
    cross-entropy. SmoothAdv: m = --num_noise_vec noise draws, the PGD attack on them, then
    cross-entropy on x_adv + d_1..d_m with the same draws.
    """
    n = x.shape[0]
    k = args.num_noise_vec if method == 'smoothadv' else args.gauss_num
    # noise is drawn on the device: no host-side tensor of n * k images
    noise = torch.randn((n, k, *x.shape[1:]), device=x.device, dtype=x.dtype).mul_(args.sigma)
    if method == 'smoothadv':
        x = smoothadv_attack(model, x, y, noise, epsilon=epsilon_at(epoch, args.epsilon, args.warmup),
                             num_steps=args.num_steps)
    logits = model((x.unsqueeze(1) + noise).flatten(0, 1)).view(n, k, -1)
    if method == 'macer':
        parts = macer_loss(logits, y, sigma=args.sigma, lbd=lambda_at(epoch, args.lbd, args.lbd_after),
                           gamma=args.gamma, beta=args.beta)
    else:
        parts = gaussian_loss(logits, y)
    return (*parts, logits)


def train_one_epoch(model, loader, optimizer, scaler, *, epoch, args, device, dist, progress=True):
    """One pass over `loader`; returns the epoch's means (per image) and its noisy-copy count.

    `model` is the network as run (`runtime.Runner`); `scaler` scales fp16 losses (a no-op
    otherwise); `dist` sums the figures over the ranks of a torchrun job.
    """
    model.train()
    # running sums stay on the device; they reach the host every 20 steps and at the end
    # (classification, robustness, correct copies, non-finite losses)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    images = copies = 0
    bar = tqdm(loader, desc=f'epoch {epoch}/{args.epochs}', unit='batch', leave=False,
               disable=not (progress and dist.is_main), dynamic_ncols=True, file=sys.stderr)
    for step, (x, y) in enumerate(bar, start=1):
        # non_blocking with pinned memory lets the copy overlap the previous step's compute
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, classification, robustness, logits = training_step(model, x, y, method=args.method, epoch=epoch,
                                                                 args=args)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = x.shape[0]
        images += n
        copies += logits.shape[0] * logits.shape[1]
        with torch.no_grad():
            correct = (logits.argmax(dim=2) == y[:, None]).sum()
            sums += torch.stack([classification.double() * n, robustness.double() * n, correct.double(),
                                 (~torch.isfinite(loss)).double()])
        if step % 20 == 0 or step == len(loader):
            # sync point: every 20 steps, for the bar and the NaN check (summed over the ranks, so all
            # ranks stop together)
            s = sums.tolist()
            bad = s[3] if dist.world == 1 else dist.all_reduce_sum(sums[3:].clone()).item()
            if bad:
                raise Diverged(f'the loss became NaN or infinite in epoch {epoch} (by step {step}); the last '
                               f'good checkpoint is kept: lower --lr (now {args.lr}) or --lbd and resume from it')
            bar.set_postfix_str(f'cl={s[0] / images:.3f} rl={s[1] / images:.3f} acc={s[2] / copies:.3f}', refresh=False)
    bar.close()
    totals = torch.cat([sums[:3], sums.new_tensor([images, copies])])
    s = dist.all_reduce_sum(totals).tolist()  # the epoch's sync point
    return {'classification': s[0] / s[3], 'robustness': s[1] / s[3], 'train_acc_noise': s[2] / s[4],
            'noisy_images': int(s[4]), 'images': int(s[3])}


def rng_state():
    state = {'torch': torch.get_rng_state(), 'numpy': _numpy_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _numpy_state():
    # as plain values and a tensor: checkpoints are read with weights_only=True
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _jsonable(value):
    return json.loads(json.dumps(value))


def _loader(dataset, args, device, dist):
    """Shuffled minibatches; under torchrun each rank reads its own shard (DistributedSampler, seeded by
    --seed and the epoch) in minibatches of --batch_size / world, so the global batch stays --batch_size."""
    sampler = None
    if dist.world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank,
                                                                  shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size // dist.world, shuffle=sampler is None,
                                         sampler=sampler, num_workers=args.workers,
                                         pin_memory=device.type == 'cuda', persistent_workers=args.workers > 0)
    return loader, sampler


def _check_resume(ckpt, args):
    if ckpt.kind == 'cohen':
        raise UsageError(f'{ckpt.path} is a Cohen/Salman checkpoint: it can be certified (--task test) but not '
                         f'resumed; training resumes from this project\'s or the MACER code\'s checkpoints')
    if ckpt.kind != 'project':
        return
    if not all(k in ckpt.content for k in ('optimizer', 'scheduler', 'rng')):
        raise UsageError(f'{ckpt.path} holds weights only (no optimiser, scheduler or RNG state): certify it with '
                         f'--task test; training resumes from a --ckptdir/latest.pth')
    theirs = ckpt.args or {}
    mine = _jsonable({k: getattr(args, k) for k in IDENTITY})
    differ = [k for k in IDENTITY if k in theirs and theirs[k] != mine[k]]
    if differ:
        shown = ', '.join(f'--{k} {theirs[k]} there, {mine[k]} now' for k in differ[:3])
        raise UsageError(f'{ckpt.path} was trained with other arguments ({shown}); resume with the same '
                         f'arguments (--epochs may grow), or start a new run in another --ckptdir')


def _check_ckptdir(ckptdir, resume_epoch):
    """Never overwrite the newer checkpoint of another (or a later) run."""
    latest = os.path.join(ckptdir, LATEST)
    if not os.path.exists(latest):
        return
    try:
        epoch = read_checkpoint(latest).epoch
    except UsageError:
        epoch = None
    if resume_epoch is None:
        raise UsageError(f'--ckptdir {ckptdir} already holds a run ({LATEST}, epoch {epoch}); resume it with '
                         f'--resume_ckpt {latest}, or choose another --ckptdir')
    if epoch is None or epoch > resume_epoch:
        raise UsageError(f'--ckptdir {ckptdir} holds {LATEST} at epoch {epoch}, newer than the checkpoint resumed '
                         f'(epoch {resume_epoch}); resume from {latest}, or choose another --ckptdir')


def run_training(args, device, make_runner, certify_epoch, dist=None):
    """`--task train`: build or resume the run, then train to `--epochs`.

    `make_runner(model)` gives the module that runs the network (`runtime.Runner`: precision,
    memory format, compilation, DistributedDataParallel); `certify_epoch(model, runner, epoch)`
    certifies it after the epochs of the schedule (main.py passes `--task test`'s certification,
    in hard mode). Under torchrun (`dist`), rank 0 alone prints, logs and writes checkpoints.
    """
    from runtime import Distributed
    dist = dist or Distributed()
    if args.batch_size % dist.world:
        raise UsageError(f'--batch_size {args.batch_size} is the global batch: it must divide evenly over the '
                         f'{dist.world} processes of the job')
    num_classes = NUM_CLASSES[args.dataset]
    normalization = args.dataset if args.normalize else None
    history, start = [], 0
    if args.resume_ckpt == 'auto':
        if not args.ckptdir:
            raise UsageError('--resume_ckpt auto resumes from --ckptdir/latest.pth: give --ckptdir')
        latest = os.path.join(args.ckptdir, LATEST)
        args.resume_ckpt = latest if os.path.exists(latest) else None
    ckpt = read_checkpoint(args.resume_ckpt) if args.resume_ckpt else None
    if ckpt is not None:
        _check_resume(ckpt, args)
    if args.ckptdir:
        _check_ckptdir(args.ckptdir, None if ckpt is None else ckpt.epoch)
        if dist.is_main:
            remove_stale_temporaries(args.ckptdir)
    # the training set is read before anything is written
    train_set = get_dataset(args.dataset, args.root, 'train', download=not args.no_download)

    if ckpt is None:
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        np.random.seed(args.seed)
        model = build_model(args.arch, num_classes, normalization)
        if dist.world > 1:
            torch.manual_seed(args.seed + 1000003 * dist.rank)  # each rank its own noise
    else:
        model = fit_model(ckpt, args.arch, num_classes, f'--dataset {args.dataset}')
        if ckpt.kind == 'macer' and args.normalize:
            raise UsageError(f'{ckpt.path} is a MACER checkpoint, trained without --normalize; drop --normalize')
    model.to(device)
    runner = make_runner(model)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == 'fp16')
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_milestones, gamma=args.lr_factor)
    if ckpt is not None:
        start = ckpt.epoch
        if ckpt.kind == 'project':
            optimizer.load_state_dict(ckpt.content['optimizer'])
            scheduler.load_state_dict(ckpt.content['scheduler'])
            if 'scaler' in ckpt.content:
                scaler.load_state_dict(ckpt.content['scaler'])
            rng = ckpt.content['rng']
            if isinstance(rng, list):  # one state per rank of the job that wrote it
                if len(rng) != dist.world:
                    raise UsageError(f'{ckpt.path} was written by a job of {len(rng)} processes; resume it with as '
                                     f'many (torchrun --nproc_per_node {len(rng)}) to continue exactly')
                rng = rng[dist.rank]
            elif dist.world > 1:
                raise UsageError(f'{ckpt.path} was written by a single process; resume it with one process to '
                                 f'continue exactly')
            set_rng_state(rng)
            history = list(ckpt.content.get('history', []))
        else:
            # the public code's checkpoints hold weights and epoch only: the lr follows the schedule,
            # the momentum buffers start from zero
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                for _ in range(start):
                    scheduler.step()
            torch.manual_seed(args.seed + start)
        dist.print(f'==> resuming {ckpt.path} ({ckpt.kind} checkpoint) after epoch {start}', flush=True)
        if is_cert_epoch(start, args.cert_from, args.cert_every):
            certify_epoch(model, runner, start)  # finishes a certification the stop interrupted (or re-reads it)

    loader, sampler = _loader(train_set, args, device, dist)
    if start >= args.epochs:
        dist.print(f'==> nothing to train: the checkpoint is at epoch {start} of --epochs {args.epochs}')
        return model
    dist.print(f'==> training {args.method} ({args.arch}, {len(train_set)} {args.dataset} images, '
               f'batch {args.batch_size}, {"k" if args.method != "smoothadv" else "m"} = '
               f'{args.num_noise_vec if args.method == "smoothadv" else args.gauss_num}, sigma {args.sigma}) '
               f'on {device}{f" x {dist.world} processes" if dist.world > 1 else ""}, '
               f'epochs {start + 1}..{args.epochs}',
               flush=True)
    for epoch in range(start + 1, args.epochs + 1):
        lr = optimizer.param_groups[0]['lr']
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        stats = train_one_epoch(runner, loader, optimizer, scaler, epoch=epoch, args=args, device=device, dist=dist,
                                progress=not args.quiet)
        seconds = time.perf_counter() - t0
        scheduler.step()
        record = {'epoch': epoch, 'lr': lr, 'classification': stats['classification'],
                  'robustness': stats['robustness'], 'train_acc_noise': stats['train_acc_noise'],
                  'seconds': seconds, 'noisy_images_per_second': stats['noisy_images'] / seconds}
        if args.method == 'macer':
            record['lambda'] = lambda_at(epoch, args.lbd, args.lbd_after)
        if args.method == 'smoothadv':
            record['epsilon'] = epsilon_at(epoch, args.epsilon, args.warmup)
        history.append(record)
        dist.print(f'epoch {epoch}/{args.epochs}  lr {lr:.4g}  classification {record["classification"]:.4f}  '
                   f'robustness {record["robustness"]:.4f}  acc(noise) {record["train_acc_noise"]:.4f}  '
                   f'{seconds:.1f}s  {record["noisy_images_per_second"]:.0f} noisy img/s', flush=True)
        certify_now = is_cert_epoch(epoch, args.cert_from, args.cert_every)
        save_now = args.ckptdir and (epoch % args.save_every == 0 or epoch == args.epochs or certify_now)
        if save_now:
            rng = rng_state() if dist.world == 1 else dist.gather(rng_state())  # every rank's, to resume exactly
        if save_now and dist.is_main:
            content = {'format': FORMAT, 'net': base_network(model).state_dict(), 'epoch': epoch, 'arch': args.arch,
                       'dataset': args.dataset, 'normalization': normalization, 'num_classes': num_classes,
                       'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                       'scaler': scaler.state_dict(), 'rng': rng, 'args': _jsonable(vars(args)),
                       'history': history}
            if certify_now:
                save_checkpoint(os.path.join(args.ckptdir, f'{epoch}.pth'), content)
            save_checkpoint(os.path.join(args.ckptdir, LATEST), content)
            # the log is rewritten from the checkpoint's history: the two never disagree
            atomic_write_text(os.path.join(args.ckptdir, LOG_NAME),
                              ''.join(json.dumps(r) + '\n' for r in history))
        if certify_now:
            certify_epoch(model, runner, epoch)
    return model
