"""The outputs of the `visualize/` commands: written as one set (all new, or all as before), and the ending
every such command shares (an error as one line, exit status 2).
"""
import os
import shutil
import sys

from plumbing.errors import DiskFull, UsageError, first_line, is_disk_full
from plumbing.files import fsync_dir, remove_stale_temporaries, temporary
from plumbing.locks import FolderLock

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
                temporaries.append(temporary(path))
                write(temporaries[-1])
                with open(temporaries[-1], 'rb+') as f:
                    os.fsync(f.fileno())
        except BaseException as e:
            for tmp in temporaries:
                _remove(tmp)
            raise self._error(e, 'no output was changed, every file of the set is as it was before') from None
        self._swap([(path, tmp) for (path, _), tmp in zip(self.outputs, temporaries)])
        for folder in folders:
            fsync_dir(folder)

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



def _keep_aside(path):
    """A second name for `path`'s current content (a hard link, or a copy where links are not supported)."""
    aside = temporary(path)
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
