"""Training: one loop for every method of the table (`methods/`: MACER, Algorithm 1, and the methods it is
compared with).

Top to bottom: one training step of any method (`training_step`: the noise, then the method's step), one epoch
(`train_one_epoch`), the optimiser, schedule and scaler (`optimization`), and the loop (`run_training`): per
epoch the learning-rate step, a log line, a checkpoint and, on the certification schedule, a certification of
the model in hard mode. The run's folder, its checkpoints and how a resumed run's state is put back are in
`resume.py` (one run per folder, one process at a time; checkpoints hold everything needed to continue
exactly and are written atomically).

Where the randomness comes from, so that a resumed run continues bit for bit (on the same device model):
the training noise (and the attacks' random directions, SmoothMix's mixing coefficients, CAT-RS's binomial
draws) from the main process's generator on the training device, which the checkpoint restores; the shuffle
and the augmentation from (--seed, epoch, rank, world) alone when loader workers read the data
(`data.training_loader`), else from the main process's CPU generator, restored too.
"""
import math
import re
import sys
import time
import warnings

import torch
from tqdm import tqdm

import checkpoint
from data import INPUT_SHAPE, get_dataset, training_loader
from methods import METHODS
from plumbing.devices import Runner
from plumbing.errors import UsageError, first_line
from resume import Run, RunFolder, check_resumable, device_note, diverged_advice, restore, run_id_for, start_model
from rs.core import device_memory, out_of_memory


class Diverged(UsageError):
    """The loss became NaN or infinite."""


class StepTooLarge(UsageError):
    """A training step does not fit in the device's memory."""


def is_cert_epoch(epoch, cert_from, cert_every):
    """The public code's schedule, generalised: epochs cert_from, cert_from + cert_every, ..."""
    return epoch >= cert_from and (epoch - cert_from) % cert_every == 0


def hyper_of(method, args, epoch, prepared=None):
    """The hyper-parameters of epoch `epoch` (1-based) for `method`'s step: the method's own (`Method.hyper`), and
    the noise: sigma and k, the noisy copies of each image."""
    hyper = method.hyper(args, epoch)
    hyper.sigma, hyper.k, hyper.prepared = args.sigma, method.copies_of(args), prepared
    return hyper


def step_setup(name, sigma, epoch=1, **flags):
    """(method, hyper-parameters of `epoch`) for method `name` with `flags` (its own; the others take the method's
    defaults), outside a run: for the tests and the benchmarks, which call `training_step` directly."""
    from types import SimpleNamespace
    method = METHODS[name]
    unknown = set(flags) - set(method.flags) - {'beta'}
    assert not unknown, f'{name} has no flags {unknown}'
    args = SimpleNamespace(sigma=sigma, beta=flags.pop('beta', 16.0),
                           **{f: flags.get(f, p.default) for f, p in method.flags.items()})
    return method, hyper_of(method, args, epoch)


def training_step(model, x, y, method, hyper, batch=()):
    """One minibatch of `method`: the noise d [n, k, C, H, W] ~ N(0, sigma^2 I), drawn on the device before
    anything else (no host-side tensor of n * k images; the order every method's randomness keeps), then the
    method's step (`methods.base.Method.step`), which returns a `methods.base.Step`. `batch`: what else the
    loader gave, for a method that reads per-image data (the images' indices)."""
    n = x.shape[0]
    noise = torch.randn((n, hyper.k, *x.shape[1:]), device=x.device, dtype=x.dtype).mul_(hyper.sigma)
    return method.step(model, x, y, noise, hyper, batch)


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


# the figures every step adds to the epoch's sums, before the method's own (`methods.base.Method.figures`): the
# classification and robustness losses (times the images), the noisy copies classified right, the non-finite
# losses, the gradient norms of the steps taken, the steps taken, the steps the fp16 scaler skipped
FIGURES = ('classification', 'robustness', 'correct', 'nonfinite', 'grad_norm', 'taken', 'skipped')


def train_one_epoch(model, loader, optimizer, scaler, method, hyper, *, epoch, epochs, device, job, progress=True):
    """One pass over `loader` with `method`'s step and this epoch's hyper-parameters `hyper` (`hyper_of`); returns
    the epoch's figures.

    `model` is the network as run (`plumbing.devices.Runner`); `job` sums the figures over the ranks of a
    torchrun job. Figures: per image the mean classification and robustness losses; the accuracy of
    the noisy copies; the mean gradient norm over the steps the optimiser took (None when it took none)
    and the steps the fp16 gradient scaler skipped; and the sums of the method's own figures (`sums`). The
    epoch ends with every rank holding rank 0's buffers (BatchNorm's running statistics), which are what a
    checkpoint saves and a certification uses: DDP broadcasts them only when a forward pass starts, and each
    rank's last forward has updated its own.
    """
    model.train()
    names = FIGURES + method.figures
    slot = {name: k for k, name in enumerate(names)}
    # running sums stay on the device; they reach the host every 20 steps and at the end
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    images = copies = 0
    bar = tqdm(loader, desc=f'epoch {epoch}/{epochs}', unit='batch', leave=False,
               disable=not (progress and job.is_main), dynamic_ncols=True, file=sys.stderr)
    for i, (x, y, *extra) in enumerate(bar, start=1):
        # non_blocking with pinned memory lets the copy overlap the previous step's compute
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        try:
            step = training_step(model, x, y, method, hyper, extra)
            grad_norm = optimizer_step(optimizer, scaler, step.loss)
        except (RuntimeError, MemoryError) as e:
            if not out_of_memory(e):
                raise
            raise StepTooLarge(f'a training step of {x.shape[0]} images x {hyper.k} noisy copies does not fit in the '
                               f'memory of {device} ({first_line(e, 160)}); lower --batch_size or '
                               f'{copies_flag(method)} (the last checkpoint is kept)') from None
        n = x.shape[0]
        images += n
        copies += step.logits.shape[0] * step.logits.shape[1]
        with torch.no_grad():
            correct = (step.logits.argmax(dim=2) == y[:, None]).sum()
            own = [step.figures[name].double() for name in method.figures]
            sums += torch.stack([step.classification.double() * n, step.robustness.double() * n, correct.double(),
                                 (~torch.isfinite(step.loss)).double(), *step_figures(grad_norm, scaler), *own])
        if i % 20 == 0 or i == len(loader):
            # sync point: every 20 steps, for the bar and the NaN check (summed over the ranks, so all
            # ranks stop together)
            s = sums.tolist()
            k = slot['nonfinite']
            bad = s[k] if job.world == 1 else job.all_reduce_sum(sums[k:k + 1].clone()).item()
            if bad:
                raise Diverged(f'the loss became NaN or infinite in epoch {epoch} (by step {i})')
            bar.set_postfix_str(f'cl={s[slot["classification"]] / images:.3f} rl={s[slot["robustness"]] / images:.3f} '
                                f'acc={s[slot["correct"]] / copies:.3f}', refresh=False)
    bar.close()
    totals = torch.cat([sums, sums.new_tensor([images, copies])])
    s = (totals if job.world == 1 else job.all_reduce_sum(totals)).tolist()  # the epoch's sync point
    job.broadcast_buffers(model)
    total = dict(zip(names, s))
    images, copies = s[-2], s[-1]
    return {'classification': total['classification'] / images, 'robustness': total['robustness'] / images,
            'train_acc_noise': total['correct'] / copies,
            'grad_norm': total['grad_norm'] / total['taken'] if total['taken'] else None,
            'skipped_steps': int(total['skipped']), 'noisy_images': int(copies), 'images': int(images),
            'sums': {name: total[name] for name in method.figures}}


def copies_flag(method):
    """The flag that sets how many noisy copies of each image a step of `method` trains on."""
    return '--' + (method.copies or 'batch_size')


def check_step_fits(args, device, job):
    """Refuse, before anything is read or written, a step whose noisy copies alone exceed the device's memory
    (--batch_size / W images x k or m copies): it could never run, and the allocator's error says nothing of
    which flag to lower."""
    method = METHODS[args.method]
    k = method.copies_of(args)
    copies = args.batch_size // job.world * k
    need = copies * math.prod(INPUT_SHAPE[args.dataset]) * 4
    memory = device_memory(device)
    if memory is not None and need > memory:
        raise UsageError(f'a training step holds {args.batch_size // job.world} images x {k} noisy copies '
                         f'({copies} {"x".join(map(str, INPUT_SHAPE[args.dataset]))} images, {need / 2 ** 30:.1f} GiB '
                         f'before any activation), more than the {memory / 2 ** 30:.1f} GiB of {device}; lower '
                         f'--batch_size or {copies_flag(method)}')


def weight_norm(model):
    """The L2 norm of all trainable weights: its growth is how MACER's collapse at large lambda starts."""
    with torch.no_grad():
        return float(torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in model.parameters()])))


def _loader(dataset, args, device, job, with_index=False):
    """Shuffled minibatches (`data.training_loader`); under torchrun each rank reads its own shard in
    minibatches of --batch_size / world, so the global batch stays --batch_size. `with_index`: each batch holds
    the images' indices too (a method that reads per-image data)."""
    return training_loader(dataset, batch_size=args.batch_size // job.world, workers=args.workers, seed=args.seed,
                           rank=job.rank, world=job.world, pin_memory=device.type == 'cuda', with_index=with_index)


def optimization(model, args, device):
    """SGD with momentum and weight decay, the multi-step learning-rate schedule, and the gradient scaler of
    fp16 (disabled in every other precision: fp16 gradients underflow without loss scaling, bf16 and fp32 need
    none). A resumed run's state is then put back into them (`resume.restore`)."""
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == 'fp16')
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_milestones, gamma=args.lr_factor)
    return optimizer, scheduler, scaler


def start(args, ckpt, device, job):
    """A new run (seeded by --seed) or the resumed one, on `device`, with its optimiser, schedule and scaler
    (`optimization`) and, when resumed, their state and the run's history and identity (`resume.restore`)."""
    model = start_model(args, ckpt, device, job)
    optimizer, scheduler, scaler = optimization(model, args, device)
    history = [] if ckpt is None else restore(ckpt, optimizer, scheduler, scaler, job, args, device)
    return Run(model, optimizer, scheduler, scaler, run_id_for(ckpt, job), history,
               0 if ckpt is None else ckpt.epoch, ckpt)


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
    if args.train_images is not None:
        if args.train_images > len(train_set):
            raise UsageError(f'--train_images {args.train_images}: the {args.dataset} training set has {len(train_set)} '
                             f'images; give {len(train_set)} or fewer')
        train_set = torch.utils.data.Subset(train_set, range(args.train_images))
    method = METHODS[args.method]
    prepared = method.prepare(args, train_set) if method.prepare is not None else None
    run = start(args, ckpt, device, job)
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
    loader, sampler = _loader(train_set, args, device, job, method.needs_index)
    if run.start >= args.epochs:
        job.print(f'==> nothing to train: the checkpoint is at epoch {run.start} of --epochs {args.epochs}')
        return run.model
    job.print(f'==> training {args.method} ({args.arch}, {len(train_set)} {args.dataset} images, '
              f'batch {args.batch_size}, {"k" if method.copies == "gauss_num" else "m"} = '
              f'{method.copies_of(args)}, sigma {args.sigma}) '
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
            hyper = hyper_of(method, args, epoch, prepared)
            figures = train_one_epoch(runner, loader, run.optimizer, run.scaler, method, hyper, epoch=epoch,
                                      epochs=args.epochs, device=device, job=job, progress=not args.quiet)
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
        entry.update(method.log(args, epoch, hyper, figures['sums'], figures['images']))
        run.history.append(entry)
        job.print(epoch_line(entry, args.epochs, method), flush=True)
        certify_now = is_cert_epoch(epoch, args.cert_from, args.cert_every)
        if folder is not None and (epoch % args.save_every == 0 or epoch == args.epochs or certify_now):
            folder.save(args, run, epoch, certify_now, job, record, device)
        if certify_now:
            certifier.epoch(runner, epoch, pending_only=False, run_id=run.run_id)
    return run.model


def epoch_line(entry, epochs, method=None):
    """The printed line of an epoch's log record; the steps the fp16 scaler skipped are named when there were any,
    and what the method says of its epoch (`methods.base.Method.line`)."""
    extra = ''
    if entry['skipped_steps']:
        extra += f'  skipped steps {entry["skipped_steps"]} (fp16 overflow)'
    if method is not None:
        extra += method.line(entry)
    return (f'epoch {entry["epoch"]}/{epochs}  lr {entry["lr"]:.4g}  classification {entry["classification"]:.4f}  '
            f'robustness {entry["robustness"]:.4f}  acc(noise) {entry["train_acc_noise"]:.4f}  '
            f'{entry["seconds"]:.1f}s  {entry["noisy_images_per_second"]:.0f} noisy img/s{extra}')


