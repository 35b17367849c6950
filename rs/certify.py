"""Certification of a data set: `Smooth` on each chosen test image, with files that survive a crash.

In a folder, a run named NAME writes (docs/FORMATS.md):
- `NAME.json`: how the results were made (the identity, every argument, every environment that
  certified images), written first with status "running", then with the summary, the SHA-256 of the
  logs and status "complete";
- `NAME.hard.tsv` / `NAME.soft.tsv`: the community's log, one row appended and flushed per image;
- `NAME.stats.jsonl`: each image's sufficient statistics (`rs.stats.Evidence`), appended just
  before its rows, from which its certificates can be recomputed at another alpha or bound;
- `NAME.mat`: the MACER code's file, written (atomically) at the end.

Rerunning the same command resumes from the logs; a run with another identity is refused rather
than mixed in, every logged row and statistics line is checked against what the arguments allow
(`rs.results.read_results`), and a finished run's logs against the digest its JSON records. Each image has its
own noise stream (`rs.core.image_generator`), so a resumed run gives exactly the results of an
uninterrupted one, and a run sharded over the ranks of a torchrun job (`job`) gives exactly those of
a single process. This module knows no flags: the caller passes every value.
"""
import errno
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, List, Optional

import numpy as np
from tqdm import tqdm

from plumbing.errors import DiskFull, UsageError, disk_full_message
from plumbing.files import atomic_write_text, remove_stale_temporaries
from plumbing.records import VERSION
from plumbing.torchrun import SingleProcess
from rs.core import BatchTooLarge, NonFiniteOutput, Smooth, image_generator
from rs.results import (ImageResult, Row, RowLimits, check_digest, check_identity, evidence_line,
                        header_line, images_without_statistics, read_record, read_results, summary, write_logs,
                        write_mat, write_record)
from rs.stats import GRID, NonFiniteCertificate, certificates, certified_radii, check_alpha, modes_of


@dataclass
class Certified:
    """What a certification gives back: {mode: radii} in the MACER encoding, in index order; the samples
    drawn (the JSON's `samples`: totals only when every image's count is known, which a log resumed from
    a version without statistics lacks); the number of images the early test abstained on."""
    radii: Dict[str, np.ndarray]
    samples: Dict[str, object]
    early: int


def samples_drawn(drawn: List[Optional[int]], standard_per_image: int) -> Dict[str, object]:
    """The JSON's `samples` from the samples drawn per image (None where unknown)."""
    samples: Dict[str, object] = {'standard_per_image': standard_per_image}
    if all(d is not None for d in drawn):
        total = sum(d for d in drawn if d is not None)
        samples.update(total=total, saved=1 - total / (standard_per_image * len(drawn)))
        if any(d != standard_per_image for d in drawn):
            samples['per_image'] = drawn
    return samples


def certify_dataset(model, dataset, indices, *, num_classes, sigma, mode, beta, N0, N, alpha, batch, seed,
                    device, files=None, identity=None, record=None, labels=None, early_abstain=0, progress=True,
                    job=None) -> Certified:
    """Certify `dataset[i]` for i in `indices`; returns their radii and the samples drawn (`Certified`).

    `files` (`rs.results.ResultFiles`, or None to keep nothing): where the results go. `identity`:
    the values that determine the results (model digest, data, every statistic's argument); a
    resumed run must match it exactly. `record`: everything else the JSON keeps (arguments,
    environment). `labels`: the test set's labels, to check logged rows against. `early_abstain`: M
    of `Smooth.evidence` (0: the standard protocol). `job` (`runtime.Distributed`): under torchrun each
    rank certifies its share of the images into a part log of its own, and rank 0 merges the parts
    into the same files a single process writes.
    """
    job = job or SingleProcess()
    try:
        check_alpha(alpha)
    except ValueError as e:
        raise UsageError(f'{e}; choose another --alpha') from None
    smoothed = Smooth(model, num_classes, sigma, device, mode, beta)
    modes = modes_of(mode)
    indices = [int(i) for i in indices]
    done: Dict[int, ImageResult] = {}
    environments: List[dict] = []
    if files is not None:
        limits = RowLimits(sigma, N, alpha, num_classes, labels, N0, early_abstain)
        done, environments = job.on_main(lambda: _open(files, identity, record, indices, limits))
    todo = [i for i in indices if i not in done][job.rank::job.world]
    writer = _Writer(files, job) if files is not None else None
    mine = {}
    shown = {'images': 0, 'correct': 0, 'radii': 0.0}  # the progress bar's running accuracy at 0 and ACR
    bar = tqdm(total=len(todo), desc=f'certify N={N}', unit='img', disable=not (progress and job.is_main),
               dynamic_ncols=True, file=sys.stderr)
    try:
        for idx in todo:
            x, label = dataset[idx]
            t0 = time.perf_counter()
            kept = '(the images certified before it are kept)'
            try:
                evidence = smoothed.evidence(x, N0, N, alpha, batch, image_generator(seed, idx, device),
                                             early_abstain, image_generator(seed, idx, device, stream=1))
                given = certificates(evidence, sigma, alpha)
            except NonFiniteOutput as e:
                if e.scores:
                    raise UsageError(f'the soft scores softmax(beta * outputs) on test image {idx} are NaN: --beta '
                                     f'{beta:g} times the network\'s outputs overflows, so no certificate can be '
                                     f'issued {kept}; lower --beta, or check the checkpoint') from None
                raise UsageError(f'the network\'s outputs on test image {idx} are NaN or infinite: no certificate can '
                                 f'be issued {kept}; check the checkpoint and --precision') from None
            except NonFiniteCertificate as e:
                raise UsageError(f'test image {idx} has no finite certificate ({e}) {kept}; check --alpha, --sigma '
                                 f'and --N') from None
            except BatchTooLarge as e:
                raise UsageError(f'--certify_batch {batch}: {e}; choose a smaller --certify_batch {kept}') from None
            seconds = time.perf_counter() - t0
            rows = {}
            for e, (prediction, r) in zip(evidence, given):
                rows[e.mode] = Row(idx, int(label), int(prediction), float(r), int(prediction == label), seconds)
            # every draw counts: the n0 of selection, the M of the early test, the n of estimation unless skipped
            drawn = N0 + early_abstain + (0 if evidence[0].early else N)
            mine[idx] = ImageResult(rows, {e.mode: e for e in evidence}, drawn)
            if writer is not None:
                writer.append(mine[idx])
            first = rows[modes[0]]
            shown['images'] += 1
            shown['correct'] += first.correct
            shown['radii'] += first.radius if first.correct else 0.0
            bar.set_postfix_str(f'acc@0={shown["correct"] / shown["images"]:.3f} '
                                f'ACR={shown["radii"] / shown["images"]:.3f}', refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    results = dict(done)
    for part in job.gather(mine):
        results.update(part)
    radii = {m: certified_radii([results[i].rows[m].radius for i in indices],
                                [results[i].rows[m].correct for i in indices]) for m in modes}
    samples = samples_drawn([results[i].drawn for i in indices], N0 + N)
    if files is not None:
        job.barrier()
        if sum(job.gather(len(todo))):  # this process computed images: its machine is one the run ran on
            environments = _add_environment(environments, record)
        extra = {'num_classes': num_classes, 'environments': environments}
        job.on_main(lambda: _finish(files, identity, dict(record or {}, **extra), indices, results, radii, samples))
    early = sum(any(e.early for e in results[i].evidence.values()) for i in indices
                if results[i].evidence is not None)
    return Certified(radii, samples, early)


class _Writer:
    """This process's logs: per image, its statistics line, then one row per mode, each flushed."""

    def __init__(self, files, job):
        self.files = files
        logs, stats = files.part(None if job.world == 1 else job.rank)
        try:
            for path in logs.values():
                if not os.path.exists(path):
                    atomic_write_text(path, header_line())
            self.stats = open(stats, 'a')
            self.logs = {m: open(logs[m], 'a') for m in files.modes}
        except OSError as e:
            raise UsageError(f'cannot open the logs of {files.name} in {files.folder} ({e.strerror})') from None

    def append(self, result):
        try:
            # the statistics first: an image whose rows are all there then always has them too
            row = next(iter(result.rows.values()))
            self.stats.write(evidence_line(row.idx, row.label, result.evidence, result.drawn))
            self.stats.flush()
            for m, row in result.rows.items():
                self.logs[m].write(row.line())
                self.logs[m].flush()  # a crash after this line loses nothing certified so far
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(disk_full_message(e, f'the logs of {self.files.name} in {self.files.folder}')) \
                    from None
            raise

    def close(self):
        for f in (self.stats, *self.logs.values()):
            try:
                f.close()
            except OSError:
                pass


def _open(files, identity, record, indices, limits):
    """Start the files of a new run, or check that the earlier run there has the same identity and
    gather what it left (its logs and any ranks' part logs) into the logs. Returns the images done,
    {idx: ImageResult}, and the environments the earlier run was computed on.

    A finished run's files must also be the ones it recorded (`check_digest`): its rows are kept, so an
    edit that its own statistics agree with would otherwise be finished into the results."""
    remove_stale_temporaries(files.folder, files.owns)
    earlier = read_record(files)
    if earlier is None:
        strays = [p for p in files.all() if os.path.lexists(p)]
        if strays:
            raise UsageError(f'{strays[0]} exists without {os.path.basename(files.json)}, so it cannot be checked '
                             f'to belong to this run; move it away or choose another --matdir')
        _write_json(files, identity, dict(record or {}, environments=_add_environment([], record)), 'running')
        write_logs(files, indices, {})
        return {}, []
    check_identity(earlier['identity'], identity, files.json)
    done = read_results(files, indices, limits, without_statistics=images_without_statistics(earlier))
    if earlier['status'] == 'complete' and not check_digest(files, earlier):
        print(f'note: {files.json} (an earlier version\'s) records no digest of its logs: they are checked for '
              f'consistency only', file=sys.stderr)
    write_logs(files, indices, done)  # what a crash cut short, and the part logs, are folded in
    files.remove_parts()
    if done:
        print(f'resuming {files.name}: {len(done)} of {len(indices)} images already certified in {files.folder}',
              file=sys.stderr)
    environments = earlier.get('environments')
    if not (isinstance(environments, list) and all(isinstance(e, dict) for e in environments)):
        environments = [earlier['environment']] if isinstance(earlier.get('environment'), dict) else []
    return done, environments


def _add_environment(environments, record):
    """`environments` with this process's environment (`record['environment']`) at the end, once."""
    mine = (record or {}).get('environment')
    return list(environments) + ([mine] if mine is not None and mine not in environments else [])


def _finish(files, identity, record, indices, results, radii, samples):
    """The final logs (every image once, in index order), the .mat and the complete JSON, which records the
    logs' digest and the images certified by a version that kept no statistics."""
    write_logs(files, indices, results)
    files.remove_parts()
    write_mat(files.mat, radii)
    seconds = sum(results[i].rows[files.modes[0]].seconds for i in indices)
    without = [i for i in indices if results[i].evidence is None]
    record = dict(record, sha256=files.digests(), **({'without_statistics': without} if without else {}))
    _write_json(files, identity, record, 'complete', radii_by_mode=radii, seconds=seconds, samples=samples)


def _write_json(files, identity, record, status, radii_by_mode=None, seconds=None, samples=None):
    content = {
        'status': status,
        'version': VERSION,
        'identity': identity,
        **(record or {}),
        'files': files.names(),
        'written': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    if radii_by_mode is not None:
        content['summary'] = {m: summary(r, GRID) for m, r in radii_by_mode.items()}
        content['seconds'] = seconds
        content['samples'] = samples
        total = samples.get('total', samples['standard_per_image'] * len(next(iter(radii_by_mode.values()))))
        content['samples_per_second'] = total / seconds if seconds else None
    write_record(files, content)
