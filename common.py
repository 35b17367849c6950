"""What every part shares: the error type for a user's mistake, atomic file writes, and folder locks.

Imports only the standard library, so `visualize/` (numpy, scipy and matplotlib only) can use it.
"""
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time

# the version of this tool, recorded in every checkpoint and result file (CHANGELOG.md)
VERSION = '1.0.0'


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

# every temporary file this tool makes is named `.BASE.macer-tmp-XXXXXXXX.tmp` (mkstemp's eight
# random characters): recognisably ours, so cleaning up after a killed run never touches a user's file
_TMP_TAG = '.macer-tmp-'
_TMP_NAME = re.compile(r'^\.(?P<base>.+)' + re.escape(_TMP_TAG) + r'[A-Za-z0-9_]{8}\.tmp$')


class UsageError(Exception):
    """A mistake the user can fix (a bad flag, a missing file, a checkpoint that does not fit).

    `main()` prints its message as one line and exits non-zero; the message names the problem
    and the fix.
    """


class DiskFull(UsageError):
    """A write failed for want of space (or quota); the message says what was kept."""


def first_line(e, limit=200):
    """The first line of an exception's message (or its type's name): for one-line errors."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


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
    checkpoint has neither.
    """
    if run_id is not None:
        return run_id
    if not history:
        return None
    return 'legacy-' + hashlib.sha256(json.dumps(history[0], sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_disk_full(e, folder):
    """Whether exception `e`, raised while writing into `folder`, means that the disk (or quota) is full.

    Python's own writes say so with ENOSPC or EDQUOT; torch.save's C++ writer raises a RuntimeError
    without an errno ("unexpected pos ..."), so for other errors the folder's free space decides.
    """
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, (OSError, RuntimeError)):
        try:
            st = os.statvfs(folder)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < 1 << 20
    return False


def atomic_write(path, write):
    """Write a file so that readers see the old file or the new one, never a part of either.

    `write(tmp_path)` writes the whole content to a temporary file in the same folder; it is
    flushed to disk and renamed over `path` (rename is atomic on POSIX). If `write` fails or the
    process dies, `path` keeps its previous content and the temporary file is removed (or, after
    SIGKILL, left as a hidden `.NAME.macer-tmp-XXXXXXXX.tmp` beside it, never read by anything and
    removed by the next run that owns the folder). A full disk raises `DiskFull`, naming what was kept.
    """
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + base + _TMP_TAG, suffix='.tmp')
    except OSError as e:
        if is_disk_full(e, folder):
            raise _disk_full(path, e) from None
        raise
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = is_disk_full(e, folder)  # before the temporary file gives its space back
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise _disk_full(path, e) from None
        if isinstance(e, (OSError, RuntimeError)):  # torch.save's writer fails with a RuntimeError and no errno
            kept = 'keeps its previous content' if os.path.exists(path) else 'was not written'
            raise UsageError(f'cannot write {path} ({first_line(e)}): {path} {kept}; check the folder (space, '
                             f'quota, permissions) and rerun the same command to resume') from None
        raise
    _fsync_dir(folder)


def _disk_full(path, e):
    kept = 'keeps its previous content' if os.path.exists(path) else 'was not written'
    return DiskFull(f'cannot write {path}: the disk is full ({first_line(e)}); {path} {kept}, and every file '
                    f'written before it is complete; free some space and rerun the same command to resume')


def disk_full_message(e, what):
    """The one line for a full disk met outside `atomic_write` (an appended log line, say)."""
    return f'the disk is full ({first_line(e)}) while writing {what}; {_KEPT_NOTE}'


_KEPT_NOTE = ('every file written before is complete (logs keep each finished row, checkpoints their previous '
              'version); free some space and rerun the same command to resume')


def remove_stale_temporaries(folder, owns):
    """Remove the temporary files `atomic_write` left in `folder` when its process was killed.

    Only files named as `atomic_write` names them (`.BASE.macer-tmp-XXXXXXXX.tmp`) whose BASE is a
    file of the run that calls it (`owns(BASE)` is true); a user's own `.notes.tmp`, and the files of
    another run writing in the same folder, are never touched. Called, under the run's lock, when
    the run starts.
    """
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        match = _TMP_NAME.match(name)
        if match and owns(match.group('base')):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def atomic_write_text(path, text):
    """`atomic_write` for a text file."""
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    atomic_write(path, write)


def _fsync_dir(folder):
    # the rename itself is durable only once the folder's entry is on disk
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def writable_dir(path, flag):
    """Create `path` if needed and check that files can be written there; a UsageError if not."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f'{flag} {path} is a file, not a folder; choose a folder')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f'{flag} {path}: cannot create the folder ({e.strerror}); '
                         f'choose a folder you can write to') from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f'{flag} {path} is not writable; choose a folder you can write to')
    return path


# the output sets `write_together` completed in this process, oldest first: what `run_command` reports as
# written when a later step fails
_WRITTEN: list = []


def run_command(work, out):
    """A command's body `work()`, returning its exit status: a UsageError or an OSError becomes one line on
    stderr and status 2 (the `visualize/` commands' shared ending).

    `work` writes its outputs (named `out` in messages) with `write_together`, whose own errors say what
    was kept; for an error outside it, the line says whether any set had been written before it.
    """
    start = len(_WRITTEN)
    try:
        work()
    except (UsageError, OSError) as e:
        if isinstance(e, UsageError):
            message = str(e)
        else:
            message = f'{e.strerror or first_line(e)}' + (f' ({e.filename})' if e.filename else '')
        written = _WRITTEN[start:]
        if written:
            message += f'; {", ".join(written)} had been written before it, complete'
        elif not isinstance(e, UsageError):
            message += f'; no output was written ({out} as before)'
        print(f'error: {message}', file=sys.stderr)
        return 2
    return 0


def output_folder(prefix, flag='--out'):
    """Create the folder of an output prefix; a UsageError when a file stands in its way or it cannot be made,
    and for a prefix without a file name of its own ('', 'DIR/', '.', '.name'), whose outputs would be hidden
    files (DIR/.png)."""
    base = os.path.basename(prefix)
    if not base or base.startswith('.'):
        raise UsageError(f'{flag} {prefix!r} names no file: the outputs would be hidden files ({os.path.join(os.path.dirname(prefix), base)}.png, ...); '
                         f'give a prefix that ends in a name, e.g. {os.path.join(prefix if not base else os.path.dirname(prefix), "figures")}')
    folder = os.path.dirname(os.path.abspath(prefix))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f'{flag} {prefix}: {folder} is a file, not a folder')
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UsageError(f'{flag} {prefix}: cannot create the folder {folder} ({e.strerror}); choose a folder you '
                         f'can write to') from None
    return folder


# how long a command waits for another that is writing the same output set (seconds): a set is written in
# seconds, so the second command then writes its own whole set after the first instead of failing
OUTPUT_LOCK_WAIT = 60.0


class OutputSet:
    """Several output files written as one set: afterwards all are new, or all are as they were.

    `outputs`: [(path, write(tmp_path))]. Each file is written to a temporary of its own (mkstemp's
    unique names, so two commands with one prefix never share one); once every one is complete, the
    files are renamed into place one after the other. The previous version of each is kept aside (a
    hard link) until the last rename and put back if a rename fails, so an error leaves every file as
    it was; the error says so, or, if putting a file back failed too, which files are new and where the
    previous versions are. The set is written under a lock (`.FIRST.lock` beside its first file): a
    second command writing the same set waits up to `OUTPUT_LOCK_WAIT` seconds and then writes its own
    whole set, so the two never mix. A SIGKILL between two renames (microseconds) is the one case that
    can leave a mix; the temporaries it leaves (`.NAME.macer-tmp-*.tmp`) are removed by the next write.
    """

    def __init__(self, outputs, what):
        self.outputs = [(os.path.abspath(p), w) for p, w in outputs]
        self.what = what

    def write(self):
        if not self.outputs:
            return
        for path, _ in self.outputs:
            if os.path.isdir(path):
                raise UsageError(f'cannot write {self.what}: {path} is a folder; move it away or choose another '
                                 f'--out (no output was changed)')
        first = self.outputs[0][0]
        lock = FolderLock(os.path.join(os.path.dirname(first), '.' + os.path.basename(first) + '.lock'),
                          self.what, 'choose another --out')
        lock.acquire(wait=OUTPUT_LOCK_WAIT)
        try:
            self._write_locked()
        finally:
            lock.release()
        _WRITTEN.append(self.what)

    def _write_locked(self):
        names = {os.path.basename(p) for p, _ in self.outputs}
        folders = sorted({os.path.dirname(p) for p, _ in self.outputs})
        for folder in folders:  # under the set's lock, these names' temporaries are left by a killed write
            remove_stale_temporaries(folder, names.__contains__)
        temporaries = []
        try:
            for path, write in self.outputs:
                temporaries.append(_temporary(path))
                write(temporaries[-1])
                with open(temporaries[-1], 'rb+') as f:
                    os.fsync(f.fileno())
        except BaseException as e:
            for tmp in temporaries:
                _remove(tmp)
            raise self._error(e, 'no output was changed, every file of the set is as it was before') from None
        self._swap([(path, tmp) for (path, _), tmp in zip(self.outputs, temporaries)])
        for folder in folders:
            _fsync_dir(folder)

    def _swap(self, pairs):
        """Rename every temporary over its file; on a failure, put every file back as it was."""
        kept, done = {}, []  # kept: path -> its previous version, linked aside
        try:
            for path, _ in pairs:
                if os.path.lexists(path):
                    kept[path] = _keep_aside(path)
            for path, tmp in pairs:
                os.replace(tmp, path)
                done.append(path)
        except BaseException as e:
            stuck = []  # files whose previous version could not be put back
            for path in reversed(done):
                try:
                    if path in kept:
                        os.replace(kept[path], path)
                        del kept[path]
                    else:
                        os.unlink(path)
                except OSError:
                    stuck.append(path)
            for path, tmp in pairs:
                _remove(tmp)
            for path, aside in kept.items():
                if path not in stuck:
                    _remove(aside)
            if stuck:
                previous = '; '.join(f'the previous {p} is {kept[p]}' for p in stuck if p in kept)
                raise self._error(e, f'the set is mixed: {", ".join(stuck)} new, every other file as before'
                                  + (f' ({previous})' if previous else '') + '; rerun to write it whole') from None
            raise self._error(e, 'no output was changed, every file of the set is as it was before') from None
        for aside in kept.values():
            _remove(aside)

    def _error(self, e, kept):
        """The one-line error for exception `e` met while writing the set, `kept` saying what was left."""
        if isinstance(e, (OSError, RuntimeError)):
            full = is_disk_full(e, os.path.dirname(self.outputs[0][0]))
            return (DiskFull if full else UsageError)(
                f'cannot write {self.what} ({first_line(e)}): {kept}' + ('; free some space and rerun' if full else ''))
        if isinstance(e, UsageError):
            return type(e)(f'{e}; {kept}')
        return e  # a bug or an interrupt: raised as it is, the files as `kept` says


def _temporary(path):
    """A new empty file beside `path`, named as `remove_stale_temporaries` recognises, with open()'s permissions."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.' + os.path.basename(path) + _TMP_TAG,
                               suffix='.tmp')
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600
    return tmp


def _keep_aside(path):
    """A second name for `path`'s current content (a hard link, or a copy where links are not supported)."""
    aside = _temporary(path)
    os.unlink(aside)
    try:
        os.link(path, aside, follow_symlinks=False)
    except OSError:
        shutil.copy2(path, aside, follow_symlinks=False)
    return aside


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_together(outputs, what):
    """Write [(path, write(tmp_path))] as one set (`OutputSet`): all new, or all as before."""
    OutputSet(outputs, what).write()


def text_writer(text):
    """A `write(tmp_path)` for `write_together` that writes `text`."""
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    return write


class FolderLock:
    """An exclusive lock on a file beside the results, held for the life of the process (or the `with`).

    `fcntl.flock` on `path`: the kernel releases it when the process ends, however it ends, so a
    SIGKILL never leaves a stale lock (on NFS, Linux maps flock onto the server's byte-range locks).
    The holder writes its PID, host, start time and command into the file; a second process fails
    (at once, or after `acquire(wait)` seconds) with a UsageError that names them. `what` says what is
    locked, for that message (e.g. '--ckptdir runs/a'). The file is removed when the lock is released;
    a file left by a killed process is simply locked again.
    """

    def __init__(self, path, what, hint):
        self.path, self.what, self.hint = path, what, hint
        self.fd = None

    def acquire(self, wait=0.0):
        import fcntl
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            except OSError as e:
                if e.errno == errno.EISDIR:
                    raise UsageError(f'{self.path} is a folder, not a lock file; move it away') from None
                if is_disk_full(e, os.path.dirname(self.path) or '.'):
                    raise DiskFull(f'cannot create the lock file {self.path}: the disk is full ({first_line(e)}); '
                                   f'nothing was written') from None
                raise UsageError(f'cannot create the lock file {self.path} ({e.strerror}); choose a folder you '
                                 f'can write to') from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UsageError(f'cannot lock {self.path} ({e.strerror}); the file system of {self.what} '
                                     f'does not support locks: choose a local or NFSv4 folder') from None
                if time.monotonic() >= deadline:
                    raise UsageError(f'{self.what} is in use by {self._holder()}; wait for it to end, or '
                                     f'{self.hint}') from None
                if not told:
                    print(f'note: {self.what} is in use by {self._holder()}; waiting up to {wait:g} s', flush=True)
                    told = True
                time.sleep(0.05)
                continue
            # the holder before us may have removed the file between our open and our lock: then this
            # lock is on a file nobody else will see, so start again on the file that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        holder = {'pid': os.getpid(), 'host': platform.node(),
                  'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'command': ' '.join(sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder) + '\n').encode())
        except OSError:
            pass  # the lock holds without its note; a second process then names no PID
        return self

    def _holder(self):
        try:
            with open(self.path) as f:
                h = json.loads(f.read())
            return (f'process {h["pid"]} on host {h["host"]} (started {h["started"]}: '
                    f'{h["command"][:120]})')
        except (OSError, ValueError, KeyError, TypeError):
            return 'another process (it has not yet written its PID)'

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class SingleProcess:
    """The job of a plain run: one process, rank 0 of 1. `runtime.Distributed` is the same interface
    for a torchrun job; code that takes a job as an argument (`rs.certify`) defaults to this one."""

    rank, world, local_rank = 0, 1, 0

    @property
    def is_main(self):
        return self.rank == 0

    def print(self, *args, **kwargs):
        """`print` on rank 0 only: one log line per job, not one per process."""
        if self.is_main:
            print(*args, **kwargs)

    def barrier(self):
        pass

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        return [obj]

    def broadcast_buffers(self, module):
        """Give every rank rank 0's buffers of `module`: nothing to do for one process."""

    def on_main(self, step):
        """Run `step()` on rank 0 and give its result to every rank; a UsageError there is raised on every rank."""
        return step()

    def close(self):
        pass
