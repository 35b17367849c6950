"""Evaluating a model on the test set: the certifications of `--task test` and those during training.

The glue between the flags and `rs/`: which test images, which files, the identity a resumed run
must match, the lock on the result files, the summary printed at the end. `rs/` itself knows no
flags; everything reaches it as an argument. `main.py` runs both tasks with a `Certifier`.
"""
import argparse
import math
import os
import platform
import sys

import numpy as np
import torch

from checkpoint import state_digest
from data import NUM_CLASSES, get_dataset, labels_of
from model import input_layer_of
from plumbing.devices import cpu_name, gpu_model
from plumbing.errors import UsageError
from plumbing.flagtypes import MAX_DISTANCE
from plumbing.locks import FolderLock
from rs.certify import certify_dataset
from rs.results import format_summary
from rs.runfiles import ResultFiles, read_record
from rs.sequential import grid_of
from rs.stats import DEFAULT_SIGMA, modes_of


def test_indices(size, start, num, skip, dataset, split='test'):
    """The test images certified: start, start + skip, ..., num of them, all inside the test set."""
    if start >= size:
        raise UsageError(f'--start_img {start} is past the end of the {dataset} {split} set ({size} images); '
                         f'choose --start_img below {size}')
    last = start + (num - 1) * skip
    if last >= size:
        fits = (size - 1 - start) // skip + 1
        raise UsageError(f'--start_img {start} --num_img {num} --skip {skip} reaches test image {last}, past the end '
                         f'of the {dataset} {split} set ({size} images); use --num_img {fits} or less')
    return list(range(start, last + 1, skip))


def shard_of(indices, shard):
    """Slice I of K of `indices` (`shard` (I, K), None: all): every K-th image from the I-th, so that each slice
    holds easy and hard images alike and a job array's tasks take about the same time."""
    if shard is None:
        return indices
    i, k = shard
    if k > len(indices):
        raise UsageError(f'--shard {i}/{k} splits {len(indices)} images into {k} slices, more than there are images: '
                         f'choose K up to {len(indices)}')
    return indices[i - 1::k]


# the arguments of a certification that its identity records and that an interrupted one is finished with
CERTIFICATION_ARGS = ('start_img', 'num_img', 'skip', 'sigma', 'beta', 'N0', 'N', 'alpha', 'early_abstain',
                      'certify_batch', 'seed')


def certification_identity(args, model, mode, device):
    """What determines a certification's numbers: a resumed run must match all of it.

    `beta` only where a soft certificate uses it. On CUDA also the GPU model (its noise and kernels
    differ between models) and whether the algorithms were deterministic; CPU identities have neither
    key, so runs made before they existed still resume."""
    identity = {'model_sha256': state_digest(model), 'input_layer': input_layer_of(model), 'dataset': args.dataset,
                'start_img': args.start_img, 'num_img': args.num_img, 'skip': args.skip, 'sigma': args.sigma,
                'mode': mode, 'beta': args.beta, 'N0': args.N0, 'N': args.N, 'alpha': args.alpha,
                'early_abstain': args.early_abstain, 'certify_batch': args.certify_batch, 'seed': args.seed,
                'device': device.type, 'precision': args.precision, 'memory_format': args.memory_format,
                'compile': args.compile}
    if mode == 'hard':
        del identity['beta']
    # only when given: the identities of CERTIFY's unsharded runs stay as they were
    if getattr(args, 'radii', None):
        identity['radii'] = list(grid_of(args.radii))
    if getattr(args, 'shard', None):
        identity['shard'] = list(args.shard)
    if getattr(args, 'split', 'test') == 'train':  # only then: the identities of test-set runs stay as they were
        identity['split'] = 'train'

    if device.type == 'cuda':
        identity['gpu'] = gpu_model(device)
        identity['deterministic'] = bool(args.deterministic)
    return identity


def resolve_sigma(args, ckpt, job):
    """--sigma of a certification: the one given, else the sigma the checkpoint was trained at (this
    project's checkpoints record it; the MACER code's, Cohen's and Salman's do not), else the default.
    Returns the training sigma (None when unknown); a given sigma that differs from it is printed."""
    recorded = (ckpt.args or {}).get('sigma') if ckpt.kind == 'project' else None
    trained = _sigma_value(recorded)
    if recorded is not None and trained is None:
        if args.sigma is None:
            raise UsageError(f'{ckpt.path} records the training sigma {str(recorded)[:40]!r}, which is not a noise '
                             f'level (a positive number up to {MAX_DISTANCE:g}): the file was edited or damaged; give '
                             f'--sigma to certify at a sigma of your choice')
        job.print(f'==> note: {ckpt.path} records the training sigma {str(recorded)[:40]!r}, which is not a noise level; '
                  f'certifying at --sigma {args.sigma}', flush=True)
    if args.sigma is None:
        args.sigma = trained if trained is not None else DEFAULT_SIGMA
        if trained is None:
            job.print(f'==> sigma {DEFAULT_SIGMA} (the default): {ckpt.path} does not record the sigma it was '
                      f'trained at; give --sigma to certify at another', flush=True)
    elif trained is not None and args.sigma != trained:
        job.print(f'==> note: certifying at sigma {args.sigma}, but {ckpt.path} was trained at sigma {trained}',
                  flush=True)
    return trained


def _sigma_value(value):
    """A recorded sigma as a float, None when it is no noise level (not a number, 0, negative, NaN, too large)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return value if math.isfinite(value) and 0 < value <= MAX_DISTANCE else None


def environment():
    """Where a result was made: versions, host, device, CPU model, threads."""
    return {'python': platform.python_version(), 'torch': torch.__version__, 'numpy': np.__version__,
            'host': platform.node(), 'cuda': torch.version.cuda,
            'device_name': torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name(),
            'cpu': cpu_name(), 'threads': torch.get_num_threads()}


class Certifier:
    """Certification with the arguments of this run, for any model and result name.

    The test set and the image indices are checked when it is made, so a training run with a bad
    certification flag stops before its first epoch, not after it.
    """

    def __init__(self, args, device, job, record):
        self.args, self.device, self.job, self.record = args, device, job, record
        # the training set too (CAT-RS's smoothed predictions), read as the test set is: no augmentation
        self.split = getattr(args, 'split', 'test') or 'test'
        self.dataset = get_dataset(args.dataset, args.root, self.split, download=not args.no_download, augment=False)
        self.indices = shard_of(test_indices(len(self.dataset), args.start_img, args.num_img, args.skip, args.dataset,
                                             self.split), getattr(args, 'shard', None))
        self.labels = labels_of(self.dataset)

    def check_run(self, run_id, epochs):
        """Before a training run's first epoch: refuse a --matdir holding another run's results for the epochs
        it will certify (found at the first certification otherwise, after hours of training)."""
        if self.args.matdir is None:
            return
        for epoch in epochs:
            record = read_record(ResultFiles(self.args.matdir, epoch, ()))
            theirs = ((record or {}).get('checkpoint') or {}).get('run_id')
            if theirs is not None and theirs != run_id:
                raise UsageError(f'--matdir {self.args.matdir} holds {epoch}.json, the results of another training run '
                                 f'({theirs}); this run would certify epoch {epoch} there: choose another --matdir')

    def __call__(self, runner, name, mode, extra=None, pending_only=False):
        """Certify `runner` (the network as run, `plumbing.devices.Runner`; `runner.model` holds its weights) in
        `mode` into the files NAME.

        pending_only: finish a certification that a stop interrupted, but leave a complete one of this
        model as it stands, whatever the certification flags are now (resuming training with another
        --N changes the certifications to come, not the finished ones); without --matdir there is
        nothing to finish. Returns {mode: radii}, or None when nothing was done.
        """
        a, job = self.args, self.job
        if pending_only and a.matdir is None:
            return None  # nothing was kept, so nothing is unfinished
        identity = certification_identity(a, runner.model, mode, self.device)
        files = ResultFiles(a.matdir, name, modes_of(mode)) if a.matdir is not None else None
        lock = FolderLock(files.lock, f'{os.path.join(a.matdir, str(name))}.* (the results named {name} in '
                          f'--matdir {a.matdir})', 'choose another --matdir or --name') if files else None
        if lock is not None:
            job.on_main(lock.acquire)
        try:
            indices, record = self.indices, dict(self.record, **(extra or {}))
            if pending_only and files is not None:
                earlier = job.on_main(lambda: read_record(files))
                same_model = earlier and earlier['identity'].get('model_sha256') == identity['model_sha256']
                if same_model and earlier['status'] == 'complete':
                    job.print(f'==> {files.json}: certified before the stop, kept as it is', flush=True)
                    return None
                if same_model:
                    # an interrupted certification is finished with the arguments it was begun with; the flags
                    # given now apply to the certifications to come (docs/RUNS.md)
                    a = self._arguments_of(earlier['identity'], files)
                    indices = test_indices(len(self.dataset), a.start_img, a.num_img, a.skip, a.dataset)
                    identity = certification_identity(a, runner.model, mode, self.device)
                    record['args'] = dict(record.get('args') or {}, **{k: getattr(a, k) for k in CERTIFICATION_ARGS})
            # the network as run, without DistributedDataParallel: a rank with no image to certify must
            # not be waited for at DDP's buffer broadcast
            network = getattr(runner, 'unsynced', runner)
            certified = certify_dataset(network, self.dataset, indices, num_classes=NUM_CLASSES[a.dataset],
                                    sigma=a.sigma, mode=mode, beta=a.beta, N0=a.N0, N=a.N, alpha=a.alpha,
                                    batch=a.certify_batch, seed=a.seed, device=self.device, files=files,
                                    identity=identity, record=record, labels=self.labels,
                                    early_abstain=a.early_abstain, progress=not a.quiet, job=job,
                                    radii=None if getattr(a, 'radii', None) is None else grid_of(a.radii))
        finally:
            if lock is not None:
                lock.release()
        if job.is_main:
            if certified.grid is None:
                print(format_summary(certified.radii), flush=True)
            else:
                print(format_summary(certified.radii, certified.grid, sequential=True), flush=True)
            samples = certified.samples
            if certified.grid is not None and 'total' in samples:
                images = len(indices)
                print(f'==> sequential tests at radii {", ".join(f"{r:g}" for r in certified.grid)}: '
                      f'{samples["total"] / images:.0f} samples per image on average, {samples["total"]} in all of '
                      f'the standard protocol\'s {samples["standard_per_image"] * images} ({100 * samples["saved"]:.1f}% '
                      f'saved)', flush=True)
            if a.early_abstain and 'total' in samples:
                images = len(indices)
                print(f'==> early abstention (M {a.early_abstain}): {certified.early} of {images} images abstained '
                      f'early; {samples["total"]} samples drawn of the standard protocol\'s '
                      f'{samples["standard_per_image"] * images}, {100 * samples["saved"]:.1f}% saved', flush=True)
            if files is not None:
                print(f'==> results: {files.mat}, {", ".join(files.logs.values())}, {files.stats}, {files.json}',
                      flush=True)
        return certified.radii

    def _arguments_of(self, identity, files):
        """The arguments with the certification settings of `identity` (an interrupted certification's), with a
        line saying which differ from the flags given now; a UsageError for an identity that cannot be read."""
        a = argparse.Namespace(**vars(self.args))
        try:
            for key in CERTIFICATION_ARGS:
                if key in identity:
                    setattr(a, key, type(getattr(self.args, key))(identity[key]))
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f'{files.json}: its identity is damaged; move the files of {files.name} away') from None
        differ = [f'--{k} {getattr(a, k)} (given now: {getattr(self.args, k)})' for k in CERTIFICATION_ARGS
                  if getattr(a, k) != getattr(self.args, k)]
        if differ:
            self.job.print(f'==> finishing {files.json}, interrupted by the stop, with the arguments it was begun with '
                           f'({", ".join(differ)}); the flags given now apply to the certifications to come',
                           flush=True)
        return a

    def epoch(self, runner, epoch, pending_only, run_id):
        """The certification of a training epoch (hard mode), into the files EPOCH of --matdir; pending_only as
        for `__call__`. `runner` is the network as trained (certified without DistributedDataParallel)."""
        a = self.args
        self.job.print(f'==> certifying epoch {epoch} (hard mode, {len(self.indices)} test images, N {a.N}'
                       f'{"" if a.matdir else ", printed only: no --matdir"})', flush=True)
        self(runner, epoch, 'hard', extra={'checkpoint': {'epoch': epoch, 'run_id': run_id}},
             pending_only=pending_only)


def command_record(args_record):
    """The JSON's description of how a result was made, beside its identity: the arguments that applied
    (`cli.record`), the command line and the environment."""
    return {'args': args_record, 'command': sys.argv, 'environment': environment()}

