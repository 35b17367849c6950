"""Certification of a data set: CERTIFY (`rs.core.Smooth`) on each chosen test image, each result kept as it
comes.

Each image has its own noise stream (`rs.core.image_generator`), so a resumed run gives exactly the
results of an uninterrupted one, and a run sharded over the ranks of a torchrun job (`job`) gives
exactly those of a single process. The run's files in its folder (what is written when, how a rerun
resumes from them and how they are checked) are `rs.runfiles`'s. This module knows no flags: the
caller passes every value.
"""
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
from tqdm import tqdm

from plumbing.errors import UsageError
from plumbing.torchrun import SingleProcess
from rs.checks import RowLimits
from rs.core import BatchTooLarge, NonFiniteOutput, Smooth, image_generator, out_of_memory
from rs.results import ImageResult, Row
from rs.runfiles import LogWriter, add_environment, finish_run, open_run
from rs.sequential import NonFiniteImage, Plan, certificate_of, certify_images
from rs.stats import Evidence, NonFiniteCertificate, certificates, certified_radii, check_alpha, modes_of


@dataclass
class Certified:
    """What a certification gives back: {mode: radii} in the MACER encoding, in index order; the samples
    drawn (the JSON's `samples`: totals only when every image's count is known, which a log resumed from
    a version without statistics lacks); the number of images the early test abstained on."""
    radii: Dict[str, np.ndarray]
    samples: Dict[str, object]
    early: int
    grid: Optional[tuple] = None  # a sequential certification's radii: its radius column is the largest certified


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
                    job=None, radii=None) -> Certified:
    """Certify `dataset[i]` for i in `indices`; returns their radii and the samples drawn (`Certified`).

    `files` (`rs.runfiles.ResultFiles`, or None to keep nothing): where the results go. `identity`:
    the values that determine the results (model digest, data, every statistic's argument); a
    resumed run must match it exactly. `record`: everything else the JSON keeps (arguments,
    environment). `labels`: the test set's labels, to check logged rows against. `early_abstain`: M
    of `Smooth.evidence` (0: the standard protocol). `job` (`plumbing.torchrun.Distributed`): under torchrun each
    rank certifies its share of the images into a part log of its own, and rank 0 merges the parts
    into the same files a single process writes. `radii`: certify sequentially at these radii
    (`rs.sequential`; hard mode, no early abstention): each image stops as soon as every radius is decided,
    and its row's radius is the largest one certified.
    """
    job = job or SingleProcess()
    try:
        check_alpha(alpha)
    except ValueError as e:
        raise UsageError(f'{e}; choose another --alpha') from None
    if radii is not None and (mode != 'hard' or early_abstain):
        raise UsageError('--radii certifies sequentially with Clopper-Pearson tests: it needs --mode hard and no '
                         '--early_abstain (the sequential test gives up on hopeless images by itself)')
    smoothed = Smooth(model, num_classes, sigma, device, mode, beta)
    modes = modes_of(mode)
    indices = [int(i) for i in indices]
    done: Dict[int, ImageResult] = {}
    environments: List[dict] = []
    if files is not None:
        limits = RowLimits(sigma, N, alpha, num_classes, labels, N0, early_abstain, radii)
        done, environments = job.on_main(lambda: open_run(files, identity, record, indices, limits))
    todo = [i for i in indices if i not in done][job.rank::job.world]
    writer = LogWriter(files, job) if files is not None else None
    mine = {}
    shown = {'images': 0, 'correct': 0, 'radii': 0.0}  # the progress bar's running accuracy at 0 and ACR
    bar = tqdm(total=len(todo), desc=f'certify N={N}', unit='img', disable=not (progress and job.is_main),
               dynamic_ncols=True, file=sys.stderr)
    plan = Plan.make(radii, sigma, N, alpha) if radii is not None else None
    kept = '(the images certified before it are kept)'

    def show(result):
        first = result.rows[modes[0]]
        shown['images'] += 1
        shown['correct'] += first.correct
        shown['radii'] += first.radius if first.correct else 0.0
        shown['drawn'] = shown.get('drawn', 0) + (result.drawn or 0)
        bar.set_postfix_str(f'acc@0={shown["correct"] / shown["images"]:.3f} ' +
                            (f'samples/img={shown["drawn"] / shown["images"]:.0f}' if plan is not None else
                             f'ACR={shown["radii"] / shown["images"]:.3f}'), refresh=False)
        bar.update(1)

    try:
        if plan is not None:
            sequential = certify_images(smoothed, plan, ((i, *dataset[i]) for i in todo), N0, batch,
                                        lambda i: image_generator(seed, i, device), num_classes)
            try:
                for idx, label, counts0, cAHat, counts, seconds in sequential:
                    e = Evidence('hard', cAHat, plan.looks[len(counts) - 1], nA=counts[-1], counts0=counts0,
                                 looks=tuple(counts))
                    prediction, r = certificate_of(plan, cAHat, counts)
                    row = Row(idx, int(label), int(prediction), float(r), int(prediction == label), seconds)
                    mine[idx] = ImageResult({'hard': row}, {'hard': e}, N0 + e.n)
                    if writer is not None:
                        writer.append(mine[idx])
                    show(mine[idx])
            except NonFiniteImage as e:
                raise UsageError(f'the network\'s outputs on test image {e.idx} are NaN or infinite: no certificate '
                                 f'can be issued {kept}; check the checkpoint and --precision') from None
            except (RuntimeError, MemoryError) as e:
                if not out_of_memory(e):
                    raise
                raise UsageError(f'--certify_batch {batch}: a batch of that many noisy copies does not fit in the '
                                 f'memory of {device}; choose a smaller --certify_batch {kept}') from None
        for idx in (todo if plan is None else ()):
            x, label = dataset[idx]
            t0 = time.perf_counter()
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
            show(mine[idx])
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    results = dict(done)
    for part in job.gather(mine):
        results.update(part)
    radii_of = {m: certified_radii([results[i].rows[m].radius for i in indices],
                                   [results[i].rows[m].correct for i in indices]) for m in modes}
    samples = samples_drawn([results[i].drawn for i in indices], N0 + N)
    if files is not None:
        job.barrier()
        if sum(job.gather(len(todo))):  # this process computed images: its machine is one the run ran on
            environments = add_environment(environments, record)
        extra = {'num_classes': num_classes, 'environments': environments}
        job.on_main(lambda: finish_run(files, identity, dict(record or {}, **extra), indices, results, radii_of, samples,
                                       None if plan is None else plan.radii))
    early = sum(any(e.early for e in results[i].evidence.values()) for i in indices
                if results[i].evidence is not None)
    return Certified(radii_of, samples, early, None if plan is None else plan.radii)
