"""Training: MACER (Algorithm 1) and the methods it is compared with (Gaussian augmentation, SmoothAdv, Stability
training, Consistency regularization, SmoothMix) behind one loop.

Top to bottom: the schedules of the hyper-parameters, one training step of any method
(`training_step`), one epoch (`train_one_epoch`), and the loop (`run_training`): per epoch the
learning-rate step, a log line, a checkpoint and, on the certification schedule, a certification of
the model in hard mode. The run's folder, its checkpoints and how a run starts or resumes are in
`resume.py` (one run per folder, one process at a time; checkpoints hold everything needed to continue
exactly and are written atomically).

Where the randomness comes from, so that a resumed run continues bit for bit (on the same device model):
the training noise (and SmoothAdv's random directions, SmoothMix's mixing coefficients) from the main process's generator on the training
device, which the checkpoint restores; the shuffle and the augmentation from (--seed, epoch, rank, world)
alone when loader workers read the data (`data.training_loader`), else from the main process's CPU
generator, restored too.
"""
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

import checkpoint
from baselines import consistency_loss, gaussian_loss, smoothadv_attack, smoothmix_attack, smoothmix_loss, \
    soft_pgd, stability_loss
from data import INPUT_SHAPE, get_dataset, training_loader
from macer import hinge_kept, macer_loss
from plumbing.devices import Runner
from rs.core import device_memory, out_of_memory
from plumbing.errors import UsageError, first_line
from resume import RunFolder, check_resumable, device_note, diverged_advice, start_run

METHODS = ('macer', 'gaussian', 'smoothadv', 'stability', 'consistency', 'smoothmix')
# the methods that draw m noise copies per image with --num_noise_vec (MACER and Gaussian: k, --gauss_num)
M_COPIES = ('smoothadv', 'consistency', 'smoothmix')


class Diverged(UsageError):
    """The loss became NaN or infinite."""


class StepTooLarge(UsageError):
    """A training step does not fit in the device's memory."""


def lambda_at(epoch, lbd, lbd_after):
    """lambda of epoch `epoch` (1-based): 0 for the first `lbd_after` epochs, then `lbd` (the "dynamic" lambda)."""
    return 0.0 if epoch <= lbd_after else lbd


def epsilon_at(epoch, epsilon, warmup):
    """SmoothAdv's attack radius in epoch `epoch` (1-based): min(eps, epoch * eps / warmup) (docs/METHOD.md)."""
    return min(epsilon, epoch * epsilon / warmup)


def warmup_at(epoch, warmup):
    """SmoothMix's warm-up factor in epoch `epoch` (1-based): min(1, epoch / warmup), their
    min(1, (epoch + 1) / warmup) of a 0-based epoch; it scales eta and the one-step adversary's radius."""
    return min(1.0, epoch / warmup)


def is_cert_epoch(epoch, cert_from, cert_every):
    """The public code's schedule, generalised: epochs cert_from, cert_from + cert_every, ..."""
    return epoch >= cert_from and (epoch - cert_from) % cert_every == 0




@dataclass(frozen=True)
class StepArgs:
    """The hyper-parameters of one training step of `method` (those of the current epoch)."""
    method: str
    sigma: float
    k: int               # noisy copies per image: MACER's k, Gaussian's copies, the m of SmoothAdv, Consistency, SmoothMix
    lbd: float = 0.0     # MACER: lambda of this epoch; Stability, Consistency: lambda
    gamma: float = 8.0   # MACER: hinge on xi
    beta: float = 16.0   # MACER: inverse temperature of the robustness term
    epsilon: float = 0.0  # SmoothAdv, Consistency's SmoothAdv points: attack radius of this epoch (pixel units)
    num_steps: int = 0   # SmoothAdv, Consistency's SmoothAdv points, SmoothMix: attack steps
    eta: float = 0.0     # Consistency: entropy weight; SmoothMix: mixup weight of this epoch (eta x warm-up)
    adv: bool = False    # Consistency: on SmoothAdv points (--adv_training)
    step_size: float = 0.0  # SmoothMix: the attack's step alpha (pixel units)
    mix_step: int = 0    # SmoothMix: the attack step that starts the mixup (0: the image)
    maxnorm: Optional[float] = None  # SmoothMix: the attack's L2 bound (None: unbounded)
    warmup_factor: float = 1.0  # SmoothMix: min(1, epoch / warmup), scales the one-step adversary's radius

    @classmethod
    def of_epoch(cls, args, epoch):
        k = {'stability': 1}.get(args.method, args.num_noise_vec if args.method in M_COPIES else args.gauss_num)
        w = warmup_at(epoch, args.warmup) if args.method == 'smoothmix' else 1.0
        # --lbd_after is MACER's ("dynamic" lambda); every other method weighs its term by --lbd throughout
        lbd = lambda_at(epoch, args.lbd, args.lbd_after) if args.method == 'macer' else args.lbd
        return cls(args.method, args.sigma, k, lbd, args.gamma, args.beta,
                   epsilon_at(epoch, args.epsilon, args.warmup), args.num_steps, eta=args.eta * w,
                   adv=args.method == 'consistency' and args.adv_training, step_size=args.step_size,
                   mix_step=args.mix_step, maxnorm=args.maxnorm, warmup_factor=w)


def training_step(model, x, y, step):
    """One minibatch of any method: returns `(loss, classification, robustness, logits [n, k, C],
    random_directions)`.

    MACER: k noisy copies, `macer_loss`. Gaussian: k copies (1 by default), cross-entropy.
    SmoothAdv: m noise draws, the PGD attack on them, then cross-entropy on x_adv + d_1..d_m with
    the same draws; `random_directions` counts the attack's steps that took a random direction for
    want of a gradient (0 for the other methods; a 0-dim tensor on the device).
    Stability: f(x), then f(x + d) (two forward passes in train mode, in the authors' order: BatchNorm
    sees the clean batch, then the noisy one), `stability_loss`. Consistency: m copies,
    `consistency_loss`; with `step.adv` on the points of `soft_pgd` (radius epsilon, steps of
    2 epsilon / T, the mean objective: their --adv-training) with the same draws. SmoothMix: m draws
    shared by `smoothmix_attack` and both forward passes (the copies of the mixup's clean end x_start, which is
    x unless --mix_step 1, then the mixed ones), a mixing coefficient per image from U(0, 1/2) (drawn after
    the noise), `smoothmix_loss`.
    `logits` are those of the noisy copies of the images the classification term is on (for the
    training accuracy). `step`: a `StepArgs`.
    """
    n = x.shape[0]
    # noise is drawn on the device: no host-side tensor of n * k images
    noise = torch.randn((n, step.k, *x.shape[1:]), device=x.device, dtype=x.dtype).mul_(step.sigma)
    random_directions = torch.zeros((), dtype=torch.int64, device=x.device)

    def noisy(images):
        return model((images.unsqueeze(1) + noise).flatten(0, 1)).view(n, step.k, -1)
    if step.method == 'smoothadv':
        x, random_directions = smoothadv_attack(model, x, y, noise, epsilon=step.epsilon, num_steps=step.num_steps)
    if step.method == 'consistency' and step.adv and step.epsilon > 0:
        x, _ = soft_pgd(model, x, y, noise, step_size=2.0 * step.epsilon / step.num_steps, num_steps=step.num_steps,
                        maxnorm=step.epsilon, per_image_mean=True)
    if step.method == 'stability':
        clean = model(x)
        logits = noisy(x)
        parts = stability_loss(clean, logits, y, lbd=step.lbd)
    elif step.method == 'smoothmix':
        lam = torch.rand(n, device=x.device, dtype=x.dtype).div_(2)
        x_start, x_adv = smoothmix_attack(model, x, y, noise, step_size=step.step_size, num_steps=step.num_steps,
                                          mix_step=step.mix_step, warmup_factor=step.warmup_factor,
                                          maxnorm=step.maxnorm)
        logits = noisy(x_start)  # the clean side: x itself, or the one-step adversary (their code's `inputs`)
        lam_ = lam.view(-1, *[1] * (x.dim() - 1))
        mixed = noisy((1 - lam_) * x_start + lam_ * x_adv)
        parts = smoothmix_loss(logits, mixed, y, lam, eta=step.eta)
    else:
        logits = noisy(x)
        if step.method == 'macer':
            parts = macer_loss(logits, y, sigma=step.sigma, lbd=step.lbd, gamma=step.gamma, beta=step.beta)
        elif step.method == 'consistency':
            parts = consistency_loss(logits, y, lbd=step.lbd, eta=step.eta)
        else:
            parts = gaussian_loss(logits, y)
    return (*parts, logits, random_directions)


def optimizer_step(optimizer, scaler, loss):
    """Backward and step; `scaler` scales fp16 losses (a no-op otherwise). Returns the gradient's L2 norm
    (unscaled, on the device: no host sync). Under fp16 the norm is infinite or NaN exactly when the scaler
    found an overflow and skipped the step (see `step_figures`)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else loss.new_zeros(())
    scaler.step(optimizer)
    scaler.update()
    return norm


def step_figures(grad_norm, scaler):
    """What a step adds to the gradient figures: `(norm, taken, skipped)` as float64 tensors on the device.

    The gradient scaler (fp16) skips a step whose gradients hold an infinity or a NaN, which makes their
    norm non-finite: such a step adds to `skipped`, and its norm to nothing, so the logged mean is over the
    steps the optimiser took and never infinite. (Gradients whose norm alone overflows float32, past 1e19,
    would count as skipped too; training has diverged long before.) Without a scaler every step is taken.
    """
    finite = torch.isfinite(grad_norm)
    skipped = ~finite if scaler.is_enabled() else torch.zeros_like(finite)
    return (torch.where(finite, grad_norm.double(), 0.0), finite.double(), skipped.double())


def train_one_epoch(model, loader, optimizer, scaler, step, *, epoch, epochs, device, job, progress=True):
    """One pass over `loader` with the hyper-parameters `step` (`StepArgs`); returns the epoch's figures.

    `model` is the network as run (`plumbing.devices.Runner`); `job` sums the figures over the ranks of a
    torchrun job. Figures: per image the mean classification and robustness losses; the accuracy of
    the noisy copies; the mean gradient norm over the steps the optimiser took (None when it took none)
    and the steps the fp16 gradient scaler skipped; SmoothAdv's random directions (`smoothadv_attack`);
    for MACER the share of points the hinge kept. The epoch ends with every rank holding rank 0's
    buffers (BatchNorm's running statistics), which are what a checkpoint saves and a certification uses:
    DDP broadcasts them only when a forward pass starts, and each rank's last forward has updated its own.
    """
    model.train()
    # running sums stay on the device; they reach the host every 20 steps and at the end (classification,
    # robustness, correct copies, non-finite losses, gradient norms of the steps taken, steps taken, steps
    # skipped, random directions of the attack, points kept by the hinge)
    sums = torch.zeros(9, dtype=torch.float64, device=device)
    images = copies = 0
    bar = tqdm(loader, desc=f'epoch {epoch}/{epochs}', unit='batch', leave=False,
               disable=not (progress and job.is_main), dynamic_ncols=True, file=sys.stderr)
    for i, (x, y) in enumerate(bar, start=1):
        # non_blocking with pinned memory lets the copy overlap the previous step's compute
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        try:
            loss, classification, robustness, logits, random_directions = training_step(model, x, y, step)
            grad_norm = optimizer_step(optimizer, scaler, loss)
        except (RuntimeError, MemoryError) as e:
            if not out_of_memory(e):
                raise
            raise StepTooLarge(f'a training step of {x.shape[0]} images x {step.k} noisy copies does not fit in the '
                               f'memory of {device} ({first_line(e, 160)}); lower --batch_size or '
                               f'{copies_flag(step.method)} (the last checkpoint is kept)') from None
        n = x.shape[0]
        images += n
        copies += logits.shape[0] * logits.shape[1]
        with torch.no_grad():
            correct = (logits.argmax(dim=2) == y[:, None]).sum()
            kept = (hinge_kept(logits, y, gamma=step.gamma, beta=step.beta).sum() if step.method == 'macer'
                    else correct.new_zeros(()))
            sums += torch.stack([classification.double() * n, robustness.double() * n, correct.double(),
                                 (~torch.isfinite(loss)).double(), *step_figures(grad_norm, scaler),
                                 random_directions.double(), kept.double()])
        if i % 20 == 0 or i == len(loader):
            # sync point: every 20 steps, for the bar and the NaN check (summed over the ranks, so all
            # ranks stop together)
            s = sums.tolist()
            bad = s[3] if job.world == 1 else job.all_reduce_sum(sums[3:4].clone()).item()
            if bad:
                raise Diverged(f'the loss became NaN or infinite in epoch {epoch} (by step {i})')
            bar.set_postfix_str(f'cl={s[0] / images:.3f} rl={s[1] / images:.3f} acc={s[2] / copies:.3f}', refresh=False)
    bar.close()
    totals = torch.cat([sums, sums.new_tensor([images, copies])])
    s = (totals if job.world == 1 else job.all_reduce_sum(totals)).tolist()  # the epoch's sync point
    job.broadcast_buffers(model)
    figures = {'classification': s[0] / s[9], 'robustness': s[1] / s[9], 'train_acc_noise': s[2] / s[10],
               'grad_norm': s[4] / s[5] if s[5] else None, 'skipped_steps': int(s[6]),
               'noisy_images': int(s[10]), 'images': int(s[9])}
    if step.method == 'smoothadv':
        figures['random_directions'] = int(s[7])
    if step.method == 'macer':
        figures['hinge_kept'] = s[8] / s[9]
    return figures


def copies_flag(method):
    """The flag that sets how many noisy copies of each image a step of `method` trains on."""
    return '--num_noise_vec' if method in M_COPIES else '--gauss_num'


def check_step_fits(args, device, job):
    """Refuse, before anything is read or written, a step whose noisy copies alone exceed the device's memory
    (--batch_size / W images x k or m copies): it could never run, and the allocator's error says nothing of
    which flag to lower."""
    k = StepArgs.of_epoch(args, 1).k
    copies = args.batch_size // job.world * k
    need = copies * math.prod(INPUT_SHAPE[args.dataset]) * 4
    memory = device_memory(device)
    if memory is not None and need > memory:
        raise UsageError(f'a training step holds {args.batch_size // job.world} images x {k} noisy copies '
                         f'({copies} {"x".join(map(str, INPUT_SHAPE[args.dataset]))} images, {need / 2 ** 30:.1f} GiB '
                         f'before any activation), more than the {memory / 2 ** 30:.1f} GiB of {device}; lower '
                         f'--batch_size or {copies_flag(args.method)}')


def weight_norm(model):
    """The L2 norm of all trainable weights: its growth is how MACER's collapse at large lambda starts."""
    with torch.no_grad():
        return float(torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in model.parameters()])))


def _loader(dataset, args, device, job):
    """Shuffled minibatches (`data.training_loader`); under torchrun each rank reads its own shard in
    minibatches of --batch_size / world, so the global batch stays --batch_size."""
    return training_loader(dataset, batch_size=args.batch_size // job.world, workers=args.workers, seed=args.seed,
                           rank=job.rank, world=job.world, pin_memory=device.type == 'cuda')


def run_training(args, device, job, record, certifier):
    """`--task train`: build or resume the run, then train to `--epochs`.

    The network is run by a `plumbing.devices.Runner` (precision, memory format, compilation,
    DistributedDataParallel); `certifier` (`evaluate.Certifier`) certifies it after the epochs of the
    schedule, and refuses, before the first epoch, a --matdir that holds another run's results for those
    epochs. Under torchrun (`job`), rank 0 alone prints, logs, holds the folder's lock and writes
    checkpoints. `record`: the arguments that apply to the run (`cli.record`), kept in every checkpoint.
    """
    if args.batch_size % job.world:
        raise UsageError(f'--batch_size {args.batch_size} is the global batch: it must divide evenly over the '
                         f'{job.world} processes of the job')
    check_step_fits(args, device, job)
    folder = RunFolder(args.ckptdir) if args.ckptdir else None
    lock = folder.lock() if folder else None
    if lock is not None:
        job.on_main(lock.acquire)
    try:
        return _train(args, device, job, record, certifier, folder)
    finally:
        if lock is not None:
            lock.release()


def _train(args, device, job, record, certifier, folder):
    ckpt = checkpoint.read_checkpoint(args.resume_ckpt) if args.resume_ckpt else None
    if ckpt is not None:
        check_resumable(ckpt, args)
    if folder is not None:
        job.on_main(lambda: folder.check(ckpt))
    # the training set is read before anything is written
    train_set = get_dataset(args.dataset, args.root, 'train', download=not args.no_download)
    run = start_run(args, ckpt, device, job)
    job.on_main(lambda: certifier.check_run(run.run_id, [e for e in range(run.start, args.epochs + 1)
                                                         if is_cert_epoch(e, args.cert_from, args.cert_every)]))
    runner = Runner(run.model, device, args.precision, args.memory_format, args.compile, job)
    if ckpt is not None:
        job.print(f'==> resuming {ckpt.path} ({ckpt.kind} checkpoint) after epoch {run.start}', flush=True)
        note = device_note(ckpt, device)
        if note:
            job.print(note, flush=True)
        if is_cert_epoch(run.start, args.cert_from, args.cert_every):
            # finishes a certification the stop interrupted; a finished one stands as it is
            certifier.epoch(runner, run.start, pending_only=True, run_id=run.run_id)
    loader, sampler = _loader(train_set, args, device, job)
    if run.start >= args.epochs:
        job.print(f'==> nothing to train: the checkpoint is at epoch {run.start} of --epochs {args.epochs}')
        return run.model
    job.print(f'==> training {args.method} ({args.arch}, {len(train_set)} {args.dataset} images, '
              f'batch {args.batch_size}, {"m" if args.method in M_COPIES else "k"} = '
              f'{StepArgs.of_epoch(args, 1).k}, sigma {args.sigma}) '
              f'on {device}{f" x {job.world} processes" if job.world > 1 else ""}, '
              f'epochs {run.start + 1}..{args.epochs}', flush=True)
    for epoch in range(run.start + 1, args.epochs + 1):
        if args.lr_step == 'start':
            with warnings.catch_warnings():
                # the public code's order, on purpose: this epoch already trains at the new rate
                warnings.filterwarnings('ignore', message=re.escape('Detected call of `lr_scheduler.step()` before'))
                run.scheduler.step()
        lr = run.optimizer.param_groups[0]['lr']
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        try:
            figures = train_one_epoch(runner, loader, run.optimizer, run.scaler, StepArgs.of_epoch(args, epoch),
                                      epoch=epoch, epochs=args.epochs, device=device, job=job,
                                      progress=not args.quiet)
        except Diverged as e:
            raise Diverged(f'{e}; {diverged_advice(args)}') from None
        seconds = time.perf_counter() - t0
        if args.lr_step == 'end':
            run.scheduler.step()
        entry = {'epoch': epoch, 'lr': lr, 'classification': figures['classification'],
                 'robustness': figures['robustness'], 'train_acc_noise': figures['train_acc_noise'],
                 'grad_norm': figures['grad_norm'], 'skipped_steps': figures['skipped_steps'],
                 'weight_norm': weight_norm(run.model),
                 'seconds': seconds, 'noisy_images_per_second': figures['noisy_images'] / seconds}
        if args.method == 'macer':
            entry['lambda'] = lambda_at(epoch, args.lbd, args.lbd_after)
            entry['hinge_kept'] = figures['hinge_kept']
        if args.method == 'smoothadv' or (args.method == 'consistency' and args.adv_training):
            entry['epsilon'] = epsilon_at(epoch, args.epsilon, args.warmup)
        if args.method == 'smoothadv':
            entry['random_directions'] = figures['random_directions']
        if args.method == 'smoothmix':
            entry['eta'] = args.eta * warmup_at(epoch, args.warmup)
        run.history.append(entry)
        job.print(epoch_line(entry, args.epochs), flush=True)
        certify_now = is_cert_epoch(epoch, args.cert_from, args.cert_every)
        if folder is not None and (epoch % args.save_every == 0 or epoch == args.epochs or certify_now):
            folder.save(args, run, epoch, certify_now, job, record, device)
        if certify_now:
            certifier.epoch(runner, epoch, pending_only=False, run_id=run.run_id)
    return run.model


def epoch_line(entry, epochs):
    """The printed line of an epoch's log record; the steps the fp16 scaler skipped and SmoothAdv's random
    directions are named when there were any."""
    extra = ''
    if entry['skipped_steps']:
        extra += f'  skipped steps {entry["skipped_steps"]} (fp16 overflow)'
    if entry.get('random_directions'):
        extra += f'  random attack directions {entry["random_directions"]} (zero gradient)'
    return (f'epoch {entry["epoch"]}/{epochs}  lr {entry["lr"]:.4g}  classification {entry["classification"]:.4f}  '
            f'robustness {entry["robustness"]:.4f}  acc(noise) {entry["train_acc_noise"]:.4f}  '
            f'{entry["seconds"]:.1f}s  {entry["noisy_images_per_second"]:.0f} noisy img/s{extra}')


