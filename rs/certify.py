"""Certification of a data set: `Smooth.certify` on each chosen test image, with files that survive a crash.

In `--matdir`, a run named NAME writes (PAPER.md section 6):
- `NAME.json`: how the results were made (every argument, the model's SHA-256, the environment),
  written first, then the summary once complete;
- `NAME.hard.tsv` / `NAME.soft.tsv`: the community's log, one row appended and flushed per image;
- `NAME.mat`: the MACER code's file, written (atomically) at the end from the logs.

Rerunning the same command resumes from the logs; a run with other result-determining arguments
is refused rather than mixed in. Each image has its own noise stream (`rs.core.image_generator`),
so a resumed run gives exactly the results of an uninterrupted one, and a run sharded over the
ranks of a torchrun job gives exactly those of a single process.
"""
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from tqdm import tqdm

from common import UsageError, atomic_write_text, remove_stale_temporaries
from rs.core import Smooth, image_generator
from rs.results import Row, format_summary, header_line, parse_log, summary, write_mat
from rs.stats import GRID, acr, certified_accuracy, certified_radii


class ResultFiles:
    """The paths of run NAME in a folder."""

    def __init__(self, folder, name, modes):
        self.folder, self.name, self.modes = folder, str(name), tuple(modes)
        stem = os.path.join(folder, self.name)
        self.mat = stem + '.mat'
        self.json = stem + '.json'
        self.logs = {m: f'{stem}.{m}.tsv' for m in self.modes}

    def parts(self, rank):
        """The logs of one rank of a distributed run, merged into `logs` at its end."""
        return {m: f'{os.path.join(self.folder, self.name)}.{m}.part{rank}.tsv' for m in self.modes}

    def part_ranks(self):
        prefix = self.name + '.'
        ranks = set()
        for f in os.listdir(self.folder):
            if f.startswith(prefix) and '.part' in f and f.endswith('.tsv'):
                number = f[:-len('.tsv')].rsplit('.part', 1)[1]
                if number.isdigit():
                    ranks.add(int(number))
        return sorted(ranks)

    def all(self):
        return [self.json, self.mat, *self.logs.values()]


def certification_identity(args, model, mode, device):
    """What determines a certification's numbers: a resumed run must match all of it."""
    from checkpoint import state_digest
    return {'model_sha256': state_digest(model), 'dataset': args.dataset, 'start_img': args.start_img,
            'num_img': args.num_img, 'skip': args.skip, 'sigma': args.sigma, 'mode': mode, 'beta': args.beta,
            'N0': args.N0, 'N': args.N, 'alpha': args.alpha, 'certify_batch': args.certify_batch,
            'seed': args.seed, 'device': device.type, 'precision': args.precision,
            'memory_format': args.memory_format, 'compile': args.compile}


def modes_of(mode):
    return ('hard', 'soft') if mode == 'both' else (mode,)


def certify_dataset(model, dataset, indices, *, num_classes, sigma, mode, beta, N0, N, alpha, batch, seed,
                    device, files=None, identity=None, record=None, progress=True, dist=None):
    """Certify `dataset[i]` for i in `indices`; returns {mode: radii} in the MACER encoding, in index order.

    `identity`: the values that determine the results (model digest, data, every statistic's
    argument); a resumed run must match it exactly. `record`: everything else worth keeping
    (all arguments), stored in the JSON. `dist` (`runtime.Distributed`): under torchrun each rank
    certifies its share of the images into a part log of its own, and rank 0 merges the parts into
    the same files a single process writes (every image has its own noise stream, so the results
    do not depend on which rank certified it).
    """
    from runtime import Distributed
    dist = dist or Distributed()
    smoothed = Smooth(model, num_classes, sigma, device, mode, beta)
    modes = modes_of(mode)
    indices = [int(i) for i in indices]
    done = {}
    if files is not None:
        dist.on_main(lambda: _open(files, identity, record, indices))
        done = _read_done(files, indices)
    todo = [i for i in indices if i not in done][dist.rank::dist.world]
    logs = None
    if files is not None:
        paths = files.logs if dist.world == 1 else files.parts(dist.rank)
        for path in paths.values():
            if not os.path.exists(path):
                atomic_write_text(path, header_line())
        logs = {m: open(paths[m], 'a') for m in modes}
    mine = {m: [] for m in modes}
    bar = tqdm(total=len(todo), desc=f'certify N={N}', unit='img', disable=not (progress and dist.is_main),
               dynamic_ncols=True, file=sys.stderr)
    try:
        for idx in todo:
            x, label = dataset[idx]
            t0 = time.perf_counter()
            out = smoothed.certify(x, N0, N, alpha, batch, generator=image_generator(seed, idx, device))
            seconds = time.perf_counter() - t0
            for m, (prediction, r) in zip(modes, zip(out[0::2], out[1::2])):
                row = Row(idx, int(label), int(prediction), float(r), int(prediction == label), seconds)
                mine[m].append(row)
                if logs is not None:
                    logs[m].write(row.line())
                    logs[m].flush()  # a crash after this line loses nothing certified so far
            radii = _radii(mine[modes[0]])
            bar.set_postfix_str(f'acc@0={certified_accuracy(radii, (0.0,))[0]:.3f} ACR={acr(radii):.3f}',
                                refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if logs is not None:
            for f in logs.values():
                f.close()
    if files is None:
        position = {i: n for n, i in enumerate(indices)}
        rows = {m: [row for part in dist.gather(mine[m]) for row in part] for m in modes}
        return {m: _radii(sorted(rows[m], key=lambda r: position[r.idx])) for m in modes}
    dist.barrier()
    dist.on_main(lambda: _finish(files, identity, record, indices, N0 + N))
    rows = _read_done(files, indices)
    return {m: _radii([rows[i][m] for i in indices]) for m in modes}


def _radii(rows):
    return certified_radii([r.radius for r in rows], [r.correct for r in rows])


def _open(files, identity, record, indices):
    """Start the files of a new run, or check that the earlier run there has the same identity and
    merge what it left (its logs and any ranks' part logs) into the logs."""
    remove_stale_temporaries(files.folder, files.name + '.')
    if not os.path.exists(files.json):
        strays = [p for p in files.all() if os.path.exists(p)]
        if strays:
            raise UsageError(f'{strays[0]} exists without {os.path.basename(files.json)}, so it cannot be checked '
                             f'to belong to this run; move it away or choose another --matdir')
        _write_json(files, identity, record, 'running')
        for path in files.logs.values():
            atomic_write_text(path, header_line())
        return
    try:
        with open(files.json) as f:
            earlier = json.load(f)
        earlier_identity = earlier['identity']
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f'{files.json} is not a result summary of this tool; move it away or choose another '
                         f'--matdir') from None
    if earlier_identity != _jsonable(identity):
        differ = sorted(k for k in set(earlier_identity) | set(identity)
                        if earlier_identity.get(k) != _jsonable(identity).get(k))
        shown = ', '.join(f'{k} {earlier_identity.get(k)!r} there, {_jsonable(identity).get(k)!r} now'
                          for k in differ[:3])
        raise UsageError(f'{files.json} holds results made with other arguments ({shown}); rerun with the same '
                         f'arguments to resume, or choose another --matdir or --name')
    done = _merge(files, indices)
    if done:
        print(f'resuming {files.name}: {len(done)} of {len(indices)} images already certified in {files.folder}',
              file=sys.stderr)


def _merge(files, indices):
    """Gather every complete row from the logs and the part logs into the logs, in index order.

    An image counts as certified when every mode has its row; anything else (a row cut short by a
    crash, the hard row of an image whose soft row was never written) is dropped and certified
    again, so no image is lost or certified twice. The part logs are removed.
    """
    wanted = set(indices)
    found = {m: {} for m in files.modes}
    sources = [files.logs] + [files.parts(r) for r in files.part_ranks()]
    for paths in sources:
        for m in files.modes:
            path = paths[m]
            if not os.path.exists(path):
                continue
            with open(path) as f:
                rows = parse_log(f.read(), path)
            for row in rows:
                if row.idx not in wanted or row.idx in found[m] and found[m][row.idx] != row:
                    raise UsageError(f'{path} holds other images than this run certifies; move it away or choose '
                                     f'another --matdir')
                found[m][row.idx] = row
    done = [i for i in indices if all(i in found[m] for m in files.modes)]
    for m in files.modes:
        text = header_line() + ''.join(found[m][i].line() for i in done)
        current = open(files.logs[m]).read() if os.path.exists(files.logs[m]) else None
        if current != text:
            atomic_write_text(files.logs[m], text)
    for r in files.part_ranks():
        for path in files.parts(r).values():
            if os.path.exists(path):
                os.unlink(path)
    return done


def _read_done(files, indices):
    """{idx: {mode: Row}} of the images the logs hold in full."""
    found = {m: {} for m in files.modes}
    for m in files.modes:
        with open(files.logs[m]) as f:
            for row in parse_log(f.read(), files.logs[m]):
                found[m][row.idx] = row
    return {i: {m: found[m][i] for m in files.modes} for i in indices if all(i in found[m] for m in files.modes)}


def _finish(files, identity, record, indices, samples_per_image):
    done = _merge(files, indices)
    if len(done) != len(indices):
        raise UsageError(f'{len(indices) - len(done)} images of {files.name} are missing from the logs after '
                         f'certification; rerun the same command to certify them')
    rows = _read_done(files, indices)
    radii_by_mode = {m: _radii([rows[i][m] for i in indices]) for m in files.modes}
    write_mat(files.mat, radii_by_mode)
    seconds = sum(rows[i][files.modes[0]].seconds for i in indices)
    _write_json(files, identity, record, 'complete', radii_by_mode=radii_by_mode, seconds=seconds,
                samples=samples_per_image * len(indices))


def _write_json(files, identity, record, status, radii_by_mode=None, seconds=None, samples=None):
    content = {
        'status': status,
        'identity': _jsonable(identity),
        'args': _jsonable(record),
        'environment': environment(),
        'files': {'mat': os.path.basename(files.mat),
                  'logs': {m: os.path.basename(p) for m, p in files.logs.items()}},
        'written': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    if radii_by_mode is not None:
        content['summary'] = {m: summary(r, GRID) for m, r in radii_by_mode.items()}
        content['seconds'] = seconds
        content['samples_per_second'] = samples / seconds if seconds else None
    atomic_write_text(files.json, json.dumps(content, indent=1) + '\n')


def environment():
    return {'python': platform.python_version(), 'torch': torch.__version__, 'numpy': np.__version__,
            'host': platform.node(), 'cuda': torch.version.cuda,
            'device_name': torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
            'threads': torch.get_num_threads()}


def _jsonable(value):
    """The value as JSON would give it back (tuples become lists), so identities compare equal."""
    return json.loads(json.dumps(value))


def print_summary(radii_by_mode):
    print(format_summary(radii_by_mode), flush=True)
