"""The shards of one certification (`--shard I/K`, each in a folder of its own) joined into the run one process
would have written on the same images (`merge`).

Each shard is read as a resume reads a run (every row and statistics line checked against its arguments, the
digests it recorded, its summary and .mat against its logs). They must be the K slices of one certification:
the same identity but for `shard` (model digest, data, images, sigma, N0, N, alpha, seed, mode, device, ...),
the same K, each slice I once. The merged run's logs, statistics and .mat hold exactly what a single process
writes (the time column aside, which is each image's own wall time wherever it ran); its JSON has the
single process's identity and summary, lists the shards it was made from (folder, slice, digests, command)
and every environment that certified images. numpy and scipy only, as `rs.results`.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

from plumbing.errors import UsageError
from plumbing.locks import FolderLock
from plumbing.records import differences
from rs.certify import samples_drawn
from rs.checks import RowLimits
from rs.results import ImageResult, identity_key, read_result_json
from rs.runfiles import (ResultFiles, add_environment, check_digest, finish_run, images_without_statistics,
                         read_record, read_results, run_files_in, run_indices)
from rs.runs import read_run
from rs.sequential import grid_of
from rs.stats import certified_radii, modes_of

# what a single process's JSON holds beside its identity that a shard's JSON holds too, for the merged JSON
_KEPT = ('args', 'environment', 'num_classes', 'checkpoint')


def shard_run(folder: str, name: Optional[str]) -> str:
    """The JSON of the run in a shard's folder: NAME.json with `name`, else the folder's only run."""
    if not os.path.isdir(folder):
        raise UsageError(f'{folder} is not a folder; give the --matdir of each shard')
    if name is not None:
        return os.path.join(folder, f'{name}.json')
    runs = sorted({run for run in run_files_in(folder).values()
                   if os.path.lexists(os.path.join(folder, f'{run}.json'))})
    if not runs:
        raise UsageError(f'{folder} holds no certification run (no NAME.json of this tool); give the --matdir of a '
                         f'shard')
    if len(runs) > 1:
        raise UsageError(f'{folder} holds {len(runs)} runs ({", ".join(runs[:4])}); say which with --name')
    return os.path.join(folder, f'{runs[0]}.json')


def _read_shard(path: str) -> Tuple[dict, Dict[int, ImageResult], ResultFiles]:
    """A shard's record and results, checked as a reader checks a run (`rs.runs.read_run`), and its slice."""
    read_run(path, sequential=True)  # every check a reader makes: rows, statistics, digests, summary, .mat
    folder, base = os.path.split(path)
    record = read_record(ResultFiles(folder or '.', base[:-len('.json')], ()))
    assert record is not None
    identity = record['identity']
    if identity.get('shard') is None:
        raise UsageError(f'{path} is not a shard (its run was not made with --shard I/K); give the folders of the '
                         f'shards of one certification')
    files = ResultFiles(folder or '.', base[:-len('.json')], modes_of(identity.get('mode', 'hard')))
    try:
        indices = run_indices(identity)
        limits = RowLimits.of(identity, record.get('num_classes'))
    except (ValueError, KeyError, TypeError):
        raise UsageError(f'{path}: its identity is damaged; restore it') from None
    done = read_results(files, indices, limits, parts=False,
                        without_statistics=images_without_statistics(record), complete=True)
    check_digest(files, record)
    return record, done, files


def merge(folders: Sequence[str], out: str, name: Optional[str] = None, out_name: Optional[str] = None) -> dict:
    """Join the shards in `folders` into run OUT_NAME (default: the shards' name) in folder `out`; returns its
    record. Refuses, naming the folder: a shard that is not complete or not a shard, one of another
    certification, a slice given twice, a slice missing, and an `out` that holds files of a run or is a shard's."""
    if not folders:
        raise UsageError('give the folders of the shards to merge')
    shards = []
    for folder in folders:
        path = shard_run(folder, name)
        if not os.path.lexists(path):
            raise UsageError(f'{path} does not exist: {folder} holds no run named {name}')
        shards.append((folder, path) + _read_shard(path))
    first_folder, first_path, first, _, first_files = shards[0]
    base_identity = {k: v for k, v in identity_key(first['identity']).items() if k != 'shard'}
    count = int(first['identity']['shard'][1])
    seen: Dict[int, str] = {}
    for folder, path, record, _, _ in shards:
        identity = {k: v for k, v in identity_key(record['identity']).items() if k != 'shard'}
        differ = differences(base_identity, identity)
        if differ:
            raise UsageError(f'{path} is a shard of another certification than {first_path} ({differ}); merge only '
                             f'the shards of one certification')
        i, k = (int(v) for v in record['identity']['shard'])
        if k != count:
            raise UsageError(f'{path} is slice {i} of {k}, but {first_path} is a slice of {count}: the shards were '
                             f'cut differently; merge the {count} slices of one cut')
        if i in seen:
            raise UsageError(f'{path} and {seen[i]} are both slice {i} of {k}: give each slice once')
        if record.get('num_classes') != first.get('num_classes'):
            raise UsageError(f'{path} records {record.get("num_classes")} classes, {first_path} '
                             f'{first.get("num_classes")}: they are not one certification')
        seen[i] = path
    missing = [i for i in range(1, count + 1) if i not in seen]
    if missing:
        raise UsageError(f'slice {missing[0]} of {count} is missing' +
                         (f' (and {len(missing) - 1} more)' if len(missing) > 1 else '') +
                         f': the {len(seen)} shards given do not cover the images; add its folder')

    out_name = out_name or first_files.name
    inputs = {os.path.realpath(f) for f, *_ in shards}
    if os.path.realpath(out) in inputs:
        raise UsageError(f'--out {out} is the folder of a shard; merge into a folder of its own')
    os.makedirs(out, exist_ok=True)
    modes = modes_of(base_identity.get('mode', 'hard'))
    files = ResultFiles(out, out_name, modes)
    lock = FolderLock(files.lock, f'{files.stem}.* (the merged run)', 'wait for the other merge, or choose another --out')
    lock.acquire()
    try:
        present = [p for p in files.all() if os.path.lexists(p)]
        if present:
            raise UsageError(f'{present[0]} exists: --out {out} already holds files of a run named {out_name}; merge '
                             f'into another --out (nothing was written)')
        indices = list(run_indices({**base_identity}))
        results: Dict[int, ImageResult] = {}
        for _, _, _, done, _ in shards:
            results.update(done)
        assert sorted(results) == sorted(indices)  # the slices of one cut cover the images once
        environments: List[dict] = []
        for _, _, record, _, _ in shards:
            for e in record.get('environments') or []:
                environments = add_environment(environments, {'environment': e})
        record = {k: first[k] for k in _KEPT if k in first}
        if isinstance(record.get('args'), dict):
            record['args'] = dict(record['args'], shard=None)
        record['environments'] = environments
        record['merged_from'] = [{'folder': os.path.abspath(f), 'run': os.path.basename(p)[:-len('.json')],
                                  'shard': r['identity']['shard'], 'sha256': r.get('sha256'),
                                  'command': r.get('command')} for f, p, r, _, _ in
                                 sorted(shards, key=lambda s: int(s[2]['identity']['shard'][0]))]
        radii = {m: certified_radii([results[i].rows[m].radius for i in indices],
                                    [results[i].rows[m].correct for i in indices]) for m in modes}
        N0, N = int(base_identity['N0']), int(base_identity['N'])
        samples = samples_drawn([results[i].drawn for i in indices], N0 + N)
        grid = None if base_identity.get('radii') is None else grid_of(base_identity['radii'])
        try:
            finish_run(files, base_identity, record, indices, results, radii, samples, grid)
        except BaseException:
            for path in files.all():  # none of them was there before: a merge cut short leaves nothing behind
                if os.path.lexists(path):
                    os.unlink(path)
            raise
    finally:
        lock.release()
    merged = read_result_json(files.json, 'restore it')
    return merged or {}
