"""A training run's folder, and how a run starts or continues.

The folder (--ckptdir) holds one run: `latest.pth`, the numbered `EPOCH.pth` of the certified epochs,
`log.jsonl`, and `.lock` while a process trains there (`RunFolder`; the names are
`plumbing.records`', which `visualize/` reads without torch). Each run has an identity
(`run_id`, written in its checkpoints); the folder is never written by another run, or by this run
resumed from an earlier epoch than the folder holds. A checkpoint resumes a run only when its
arguments that make the run what it is (`identity_flags`) are the same (`check_resumable`). This module
writes the training half of a checkpoint (optimiser, scheduler, gradient scaler, every rank's RNG
state, the device) in `RunFolder.save` and reads it back in `restore`; `checkpoint.py` reads and
writes the rest of the format.
"""
import bisect
import json
import os
import random
import uuid
from dataclasses import dataclass

import numpy as np
import torch

import checkpoint
from data import NUM_CLASSES
from methods import METHODS, flag_names
from model import build_model
from plumbing.devices import device_record
from plumbing.errors import UsageError, first_line
from plumbing.files import atomic_write_text, check_regular, remove_stale_temporaries
from plumbing.locks import FolderLock
from plumbing.records import (LATEST, LOCK_NAME, LOG_NAME, checkpoint_values, differences, jsonable, run_checkpoints,
                              run_identity)
from plumbing.rng import rng_state, set_rng_state

def identity_flags():
    """The arguments that make a run what it is: resuming with any of them changed would silently train a
    different model, so it is refused (--epochs, the certification and I/O flags may change); with every
    method's own flags (`methods`, read when asked: a method added to the table counts)."""
    return ('method', 'dataset', 'arch', 'input_layer', 'sigma', 'beta', *flag_names(), 'batch_size', 'lr',
            'momentum', 'weight_decay', 'lr_milestones', 'lr_factor', 'lr_step', 'train_images', 'seed', 'precision')


def run_id_of(ckpt):
    """The identity of the run that wrote a project checkpoint (`plumbing.records.run_identity`)."""
    return run_identity(ckpt.run_id, ckpt.content.get('history'))


# --- one run per folder ---------------------------------------------------------------------------

class RunFolder:
    """A training run's folder (--ckptdir): the names of its files, its lock, the one-run guard and the writing
    of its checkpoints and log."""

    def __init__(self, path):
        self.path = path

    def lock(self):
        """The lock one process holds while it trains here (`plumbing.locks.FolderLock`)."""
        return FolderLock(os.path.join(self.path, LOCK_NAME), f'--ckptdir {self.path}', 'choose another --ckptdir')

    def held_run(self):
        """The run the folder holds, as the checkpoint that says most about it (latest.pth, else the last
        EPOCH.pth): a `checkpoint.Checkpoint`, or None for a folder without this tool's checkpoints."""
        ckptdir = self.path
        names = os.listdir(ckptdir)
        candidates = run_checkpoints(names)
        if not candidates:
            if LOG_NAME in names:
                raise UsageError(f'--ckptdir {ckptdir} holds {LOG_NAME} of an earlier run but no checkpoint; move it '
                                 f'away or choose another --ckptdir')
            return None
        path = os.path.join(ckptdir, candidates[0])
        try:
            ckpt = checkpoint.read_checkpoint(path)
        except UsageError as e:
            raise UsageError(f'--ckptdir {ckptdir} holds {candidates[0]}, which cannot be read ({e}); move it away '
                             f'or choose another --ckptdir') from None
        if ckpt.kind != 'project':
            raise UsageError(f'--ckptdir {ckptdir} holds {candidates[0]}, a checkpoint of another tool; move it away '
                             f'or choose another --ckptdir')
        return ckpt

    @staticmethod
    def owns(base):
        """Whether `base` names a file a training run writes in its folder (whose temporaries it may remove)."""
        return base in (LATEST, LOG_NAME) or (base.endswith('.pth') and base[:-4].isdigit())

    def check(self, ckpt):
        """Never write into a folder that holds another run, or this run at a later epoch than `ckpt` (the
        checkpoint resumed, None for a new run); then remove what killed writes of this run left there."""
        ckptdir = self.path
        held = self.held_run()
        if held is not None:
            there = os.path.join(ckptdir, os.path.basename(held.path))
            if ckpt is None:
                raise UsageError(f'--ckptdir {ckptdir} already holds a run ({os.path.basename(held.path)}, epoch '
                                 f'{held.epoch}); resume it with --resume_ckpt {there}, or choose another --ckptdir')
            if ckpt.kind != 'project':
                raise UsageError(f'--ckptdir {ckptdir} holds a run (epoch {held.epoch}); {ckpt.path}, a checkpoint of '
                                 f'the MACER code, starts a new run, which would overwrite it: choose an empty --ckptdir')
            if run_id_of(held) != run_id_of(ckpt):
                raise UsageError(f'--ckptdir {ckptdir} holds another run ({os.path.basename(held.path)}, epoch '
                                 f'{held.epoch}) than {ckpt.path}; continuing there would overwrite it: choose another '
                                 f'--ckptdir')
            if held.epoch > ckpt.epoch:
                raise UsageError(f'--ckptdir {ckptdir} holds this run at epoch {held.epoch}, later than the checkpoint '
                                 f'resumed (epoch {ckpt.epoch}); resume from {there}, or choose another --ckptdir')
            self.check_every_checkpoint(held, ckpt)
        remove_stale_temporaries(ckptdir, self.owns)

    def check_every_checkpoint(self, held, ckpt):
        """Every checkpoint of the folder must be of the run that resumes there, at an epoch it has reached:
        a copied-in latest.pth of another run would otherwise have this run overwrite that run's EPOCH.pth.
        Read without building the tensors (`plumbing.records.checkpoint_values`), so a folder of a hundred
        checkpoints is checked in a moment."""
        mine = run_id_of(ckpt)
        for name in run_checkpoints(os.listdir(self.path)):
            path = os.path.join(self.path, name)
            if os.path.samefile(path, held.path):
                continue
            try:
                check_regular(path, 'move it away or choose another --ckptdir', 'a checkpoint')
                values = checkpoint_values(path)
            except ValueError as e:
                raise UsageError(f'--ckptdir {self.path} holds {name}, which cannot be read as a checkpoint ({e}); '
                                 f'move it away or choose another --ckptdir') from None
            theirs = run_identity(values.get('run_id'), values.get('history')) if isinstance(values, dict) else None
            if theirs != mine:
                raise UsageError(f'--ckptdir {self.path} holds {name}, a checkpoint of another run than {ckpt.path} '
                                 f'(the folder mixes two runs); continuing there could overwrite it: move it away or '
                                 f'choose another --ckptdir')
            epoch = values.get('epoch')
            if isinstance(epoch, int) and epoch > ckpt.epoch:
                raise UsageError(f'--ckptdir {self.path} holds {name}, this run at epoch {epoch}, later than the '
                                 f'checkpoint resumed (epoch {ckpt.epoch}); resume from the latest, or choose another '
                                 f'--ckptdir')

    def save(self, args, run, epoch, numbered, job, record, device):
        """latest.pth (and EPOCH.pth when `numbered`) and log.jsonl, on rank 0, with every rank's RNG state and
        rank 0's device: the training half of the checkpoint, which `restore` reads back."""
        rng = rng_state(device) if job.world == 1 else job.gather(rng_state(device))  # every rank's, to resume exactly
        if not job.is_main:
            return
        content = checkpoint.content(
            run.model, epoch=epoch, arch=args.arch, dataset=args.dataset, num_classes=NUM_CLASSES[args.dataset],
            input_layer=args.input_layer, stats=args.dataset if args.input_layer != 'none' else None,
            args=jsonable(record), run_id=run.run_id, history=run.history, optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict(), rng=rng,
            device=device_record(device))
        if numbered:
            checkpoint.save_checkpoint(os.path.join(self.path, f'{epoch}.pth'), content)
        checkpoint.save_checkpoint(os.path.join(self.path, LATEST), content)
        # the log is rewritten from the checkpoint's history: the two never disagree
        atomic_write_text(os.path.join(self.path, LOG_NAME), ''.join(json.dumps(r) + '\n' for r in run.history))


# --- starting or resuming a run -------------------------------------------------------------------

def check_resumable(ckpt, args):
    """A checkpoint can resume this run: its format, its epoch against --epochs, its arguments."""
    if ckpt.kind == 'cohen':
        raise UsageError(f'{ckpt.path} is a Cohen/Salman checkpoint: it can be certified (--task test) but not '
                         f'resumed; training resumes from this project\'s or the MACER code\'s checkpoints')
    if ckpt.epoch > args.epochs:
        raise UsageError(f'{ckpt.path} is at epoch {ckpt.epoch}, past --epochs {args.epochs}: give --epochs '
                         f'{ckpt.epoch} or more to train on (or certify it with --task test)')
    if ckpt.kind == 'macer':
        if args.input_layer != 'none':
            raise UsageError(f'{ckpt.path} is a MACER checkpoint, trained without an input layer; leave '
                             f'--input_layer (and --normalize) out')
        return
    checkpoint.check_dataset(ckpt, args.dataset)
    if not all(k in ckpt.content for k in ('optimizer', 'scheduler', 'rng')):
        raise UsageError(f'{ckpt.path} holds weights only (no optimiser, scheduler or RNG state): certify it with '
                         f'--task test; training resumes from a --ckptdir/latest.pth')
    theirs = dict(ckpt.args or {})
    if ckpt.version is None:  # written before version 1.0.0: what its flags meant then
        if 'normalize' in theirs:
            theirs.setdefault('input_layer', 'normalize' if theirs['normalize'] else 'none')
        theirs.setdefault('lr_step', 'end')  # the only schedule order there was
    keys = identity_flags()
    mine = {k: getattr(args, k, None) for k in keys}
    differ = differences(theirs, mine, keys=[k for k in keys if k in theirs], prefix='--')
    if differ:
        raise UsageError(f'{ckpt.path} was trained with other arguments ({differ}); resume with the same '
                         f'arguments (--epochs may grow), or start a new run in another --ckptdir')


def device_note(ckpt, device):
    """One line when a resumed run continues on another device model than the checkpoint's (None when the
    same, or when the file does not say): kernels, and noise drawn on a GPU, differ between models, so the
    continuation is not bit-exact. Training goes on."""
    theirs = ckpt.content.get('device') if ckpt.kind == 'project' else None
    if not isinstance(theirs, dict):
        return None

    def model(record):
        return str(record.get('gpu')) if record.get('type') == 'cuda' else f'the CPU ({record.get("cpu") or "unnamed"})'
    if model(theirs) == model(device_record(device)):
        return None
    return (f'==> note: {ckpt.path} was trained on {model(theirs)}, this run continues on '
            f'{model(device_record(device))}: the continuation will not be bit-exact')


def lr_after(epoch, lr, milestones, factor):
    """The learning rate once `epoch` epochs are done (what the scheduler holds then), in closed form:
    lr * factor^(milestones <= epoch). With --lr_step end it is the rate of epoch `epoch` + 1; with
    --lr_step start (the public code's), of epoch `epoch` itself."""
    return lr * factor ** bisect.bisect_right(milestones, epoch)


def restore(ckpt, optimizer, scheduler, scaler, job, args, device):
    """Put a resumed run's state back: returns its history (the log so far).

    This project's checkpoints restore the optimiser (momentum buffers), scheduler, gradient scaler
    and every rank's RNG state (`set_rng_state`), so the run continues exactly. Those written by
    version 1.0 with loader workers continue, but not exactly: their shuffle and augmentation came from
    generators they did not save (`data.training_loader`). The public code's `{'net', 'epoch'}`
    hold weights and epoch only: the learning rate is set in closed form for that epoch, the momentum
    buffers start from zero and the RNG from --seed and the epoch. Every stored part is checked; a
    damaged one is refused with one line.
    """
    if ckpt.kind != 'project':
        lr = lr_after(ckpt.epoch, args.lr, args.lr_milestones, args.lr_factor)
        for group in optimizer.param_groups:
            group['lr'] = lr
        scheduler.last_epoch = ckpt.epoch
        scheduler._last_lr = [lr for _ in optimizer.param_groups]
        torch.manual_seed(args.seed + ckpt.epoch + 1000003 * job.rank)  # each rank its own noise
        return []
    c = ckpt.content

    def damaged(part, e=None):
        detail = f' ({first_line(e)})' if e is not None else ''
        return UsageError(f'{ckpt.path}: its {part} is damaged{detail}; resume from another checkpoint of the run')
    try:
        optimizer.load_state_dict(c['optimizer'])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as e:
        raise damaged('optimiser state', e) from None
    for group in optimizer.param_groups:
        for p in group['params']:
            buffer = optimizer.state.get(p, {}).get('momentum_buffer')
            if buffer is not None and (not isinstance(buffer, torch.Tensor) or buffer.shape != p.shape):
                raise damaged('optimiser state (a momentum buffer of another shape than its weight)')
    try:
        scheduler.load_state_dict(c['scheduler'])
        if 'scaler' in c:
            scaler.load_state_dict(c['scaler'])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        raise damaged('scheduler state', e) from None
    if scheduler.last_epoch != ckpt.epoch:
        raise damaged(f'scheduler state (at epoch {scheduler.last_epoch}, the checkpoint at {ckpt.epoch})')
    rng = c['rng']
    if isinstance(rng, list):  # one state per rank of the job that wrote it
        if len(rng) != job.world:
            raise UsageError(f'{ckpt.path} was written by a job of {len(rng)} processes; resume it with as '
                             f'many (torchrun --nproc_per_node {len(rng)}) to continue exactly')
        rng = rng[job.rank]
    elif job.world > 1:
        raise UsageError(f'{ckpt.path} was written by a single process; resume it with one process to '
                         f'continue exactly')
    try:
        set_rng_state(rng, device, ckpt.path)
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as e:
        raise damaged('random-number state', e) from None
    history = c.get('history', [])
    if not (isinstance(history, list) and all(isinstance(r, dict) and isinstance(r.get('epoch'), int)
                                              for r in history)):
        raise damaged('history (the log of its epochs)')
    return list(history)


@dataclass
class Run:
    """A run ready to train: its model, optimiser, scheduler, scaler, identity, history and first epoch."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    run_id: str
    history: list
    start: int
    ckpt: object


def start_model(args, ckpt, device, job):
    """A new run's network (seeded by --seed), or the resumed one's, on `device`."""
    num_classes = NUM_CLASSES[args.dataset]
    stats = args.dataset if args.input_layer != 'none' else None
    if ckpt is None:
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        np.random.seed(args.seed & 0xFFFFFFFF)  # NumPy's legacy seed has 32 bits (the same for seeds below 2^32)
        model = build_model(args.arch, num_classes, args.input_layer, stats)
        if job.world > 1:
            torch.manual_seed(args.seed + 1000003 * job.rank)  # each rank its own noise
    else:
        model = checkpoint.fit_model(ckpt, args.arch, num_classes, f'--dataset {args.dataset}', args.input_layer)
    return model.to(device)


def run_id_for(ckpt, job):
    """The identity of the run: a resumed project checkpoint's, else a new one (also when the run continues the
    weights of the MACER code's checkpoint)."""
    if ckpt is not None and ckpt.kind == 'project':
        return run_id_of(ckpt)
    return job.on_main(lambda: uuid.uuid4().hex)


def diverged_advice(args):
    """What to do when training diverged: which checkpoint is kept, and which flags to lower (--lr, and those of
    the method that scale its loss or its attack, `methods.base.Method.scaling`)."""
    latest = os.path.join(args.ckptdir, LATEST) if args.ckptdir else None
    scaling = METHODS[args.method].scaling(args)
    fix = 'lower ' + ' or '.join([f'--lr (now {args.lr})'] + [f'--{f} (now {getattr(args, f)})' for f in scaling])
    if latest and os.path.exists(latest):
        # a run resumes only with its own arguments: other ones make a new run, in a folder of its own
        return (f'{latest}, the last good checkpoint, is kept: {fix} and start a new run in another --ckptdir '
                f'(resuming it with the same arguments would diverge again)')
    return f'no checkpoint was written before it: {fix} and start again'
