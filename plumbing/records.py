"""What a record (a checkpoint, a result JSON) says about how it was made: the tool's version, the identity
of the training run and which file of its folder names it, and the one wording of "made with other
arguments". Standard library only: `visualize/` names a run without torch.
"""
import hashlib
import json
import pickle
import zipfile

# the version of this tool, recorded in every checkpoint and result file (CHANGELOG.md)
VERSION = '1.0.0'


def jsonable(value):
    """The value as JSON gives it back (tuples become lists), so records compare equal after a round trip."""
    return json.loads(json.dumps(value))


def differences(theirs, mine, keys=None, prefix='', limit=3):
    """'KEY A there, B now' for the first `limit` keys whose values differ between two records ('' if none).

    The one wording of "made with other arguments" for a resumed training run (`prefix='--'`, the
    flags) and a resumed certification (the identity's keys).
    """
    theirs, mine = jsonable(theirs), jsonable(mine)
    keys = sorted(set(theirs) | set(mine)) if keys is None else keys
    differ = [k for k in keys if theirs.get(k) != mine.get(k)]
    return ', '.join(f'{prefix}{k} {theirs.get(k)} there, {mine.get(k)} now' for k in differ[:limit])


def run_identity(run_id, history):
    """The identity of the training run that wrote a checkpoint, from its `run_id` and `history` entries.

    Checkpoints from before run identities existed get one derived from their first log record, which
    holds that run's own timing: stable across its checkpoints, different between runs. None when the
    checkpoint has neither, or when they are not what a run writes (a run_id that is no text, a history that
    is no list of records).
    """
    if run_id is not None:
        return run_id if isinstance(run_id, str) else None
    if not (isinstance(history, list) and history and isinstance(history[0], dict)):
        return None
    return 'legacy-' + hashlib.sha256(json.dumps(history[0], sort_keys=True, default=str).encode()).hexdigest()[:16]


# the files of a training run's folder (--ckptdir): its latest checkpoint, its log, the lock of the process
# training there; beside them the numbered EPOCH.pth of certified epochs
LATEST = 'latest.pth'
LOG_NAME = 'log.jsonl'
LOCK_NAME = '.lock'


def run_checkpoints(names):
    """The checkpoints among the file `names` of a training run's folder, the one that says most about the run
    first: latest.pth, then each EPOCH.pth from the last epoch down."""
    epochs = sorted((int(n[:-4]) for n in names if n.endswith('.pth') and n[:-4].isdigit()), reverse=True)
    return ([LATEST] if LATEST in names else []) + [f'{e}.pth' for e in epochs]


# --- a checkpoint's plain values, read without torch ---------------------------------------------------------

class _Opaque:
    """Stands for every object a checkpoint's pickle would build from a class or function (tensors, storages,
    arrays): nothing is imported or run, and the plain values around them (str, int, float, list, dict,
    tuple) are read as they are."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Dict(dict):
    """An OrderedDict of the pickle (a state_dict), without the attributes torch sets on it."""

    def __setstate__(self, state):
        pass


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _Dict if (module, name) == ('collections', 'OrderedDict') else _Opaque

    def persistent_load(self, pid):
        return None  # a tensor's storage: its bytes are never read


def checkpoint_values(path):
    """The plain values of a checkpoint that torch.save wrote (a zip whose FOLDER/data.pkl is the pickle),
    without torch: tensors and other objects read as opaque placeholders. ValueError if it is not one."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
            if len(names) != 1:
                raise ValueError('no data.pkl')
            with z.open(names[0]) as f:
                return _PlainUnpickler(f).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, MemoryError, RecursionError) as e:
        raise ValueError(str(e)) from None
