"""The outputs of the `visualize/` commands: written as one set (all new, or all as before), and the ending
every such command shares (an error as one line, exit status 2).
"""
import os
import shutil
import sys

from plumbing.errors import DiskFull, UsageError, first_line, is_disk_full
from plumbing.files import atomic_write_text, file_kind, fsync_dir, remove_stale_temporaries, same_file, sha256_of, \
    temporary
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


# the record, beside a set's files, of what this tool wrote there: `.PREFIX.macer-outputs`, {"files": {name:
# SHA-256}}. A file at an output path may be replaced only when it is listed there with its digest (an earlier
# output of this tool, unchanged since), or with --overwrite; an input of the command never.
MANIFEST_SUFFIX = '.macer-outputs'


def manifest_path(first):
    """The record of the outputs written beside output file `first` (PREFIX.EXT): `.PREFIX.macer-outputs`."""
    folder, base = os.path.split(first)
    return os.path.join(folder, '.' + os.path.splitext(base)[0] + MANIFEST_SUFFIX)


def _read_manifest(path):
    import json
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        if file_kind(os.fstat(fd).st_mode) != 'a file':
            return {}
        with os.fdopen(fd, 'rb') as f:
            fd = None
            record = json.loads(f.read(1 << 22).decode())
    except (OSError, ValueError):
        return {}
    finally:
        if fd is not None:
            os.close(fd)
    files = record.get('files') if isinstance(record, dict) else None
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(files, dict) else {}


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

    No output is ever one of `inputs` (the files the command read), and an existing file is replaced only
    when it is an earlier output of this tool, unchanged since (listed, with its SHA-256, in the set's
    record `.PREFIX.macer-outputs`), or with `overwrite` (a flag the user gives): a log, a `.mat` or any
    other file that belongs to no output set stays as it is, and the error names it.
    """

    def __init__(self, outputs, what, inputs=(), overwrite=False):
        self.outputs = [(os.path.abspath(p), w) for p, w in outputs]
        self.what = what
        self.inputs = [os.path.abspath(p) for p in inputs]
        self.overwrite = overwrite

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

    def _check_replaceable(self, manifest):
        """Refuse, before anything is written, an output that is an input or a file this tool did not write."""
        for path, _ in self.outputs:
            for given in self.inputs:
                if same_file(path, given):
                    raise UsageError(f'cannot write {self.what}: {path} is one of the files this command reads '
                                     f'({given}); an output never replaces an input: choose another --out (no '
                                     f'output was changed)')
        if self.overwrite:
            return
        for path, _ in self.outputs:
            if not os.path.lexists(path):
                continue
            why = None
            if os.path.islink(path) or not os.path.isfile(path):
                why = 'it is not a plain file'
            elif sha256_of(path) not in (manifest.get(os.path.basename(path)),
                                         manifest.get(os.path.basename(path) + ' (previous)')):
                why = ('this tool did not write it' if os.path.basename(path) not in manifest else
                       'it was changed after this tool wrote it')
            if why:
                raise UsageError(f'cannot write {self.what}: {path} exists and {why}, so it is no earlier output of '
                                 f'this command; choose another --out, or pass --overwrite to replace it (no output '
                                 f'was changed)')

    def _write_locked(self):
        record = manifest_path(self.outputs[0][0])
        manifest = _read_manifest(record)
        self._check_replaceable(manifest)
        names = {os.path.basename(p) for p, _ in self.outputs} | {os.path.basename(record)}
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
        new = {os.path.basename(path): sha256_of(tmp) for (path, _), tmp in zip(self.outputs, temporaries)}
        # the record lists the old and the new digests while the files are renamed (a kill in between leaves
        # files it still knows), then the new ones only
        aside = None
        try:
            aside = _keep_aside(record) if os.path.isfile(record) and not os.path.islink(record) else None
            atomic_write_text(record, _manifest_text(manifest, new, keep_old=True))
        except BaseException as e:
            for tmp in temporaries:
                _remove(tmp)
            if aside is not None:
                _remove(aside)
            raise self._error(e, 'no output was changed, every file of the set is as it was before') from None
        try:
            self._swap([(path, tmp) for (path, _), tmp in zip(self.outputs, temporaries)])
        except BaseException:
            # every file of the set as it was, its record too (the very file, put back)
            try:
                os.replace(aside, record) if aside is not None else _remove(record)
            except OSError:
                pass
            raise
        if aside is not None:
            _remove(aside)
        for folder in folders:
            fsync_dir(folder)
        try:
            atomic_write_text(record, _manifest_text(manifest, new, keep_old=False))
        except UsageError:
            pass  # the files are new and complete; the record still lists them (with their earlier versions)

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



def _manifest_text(manifest, new, keep_old):
    import json
    files = dict(manifest)
    for name, digest in new.items():
        old = files.get(name)
        files[name] = digest
        if keep_old and old is not None and old != digest:
            files[name + ' (previous)'] = old
    if not keep_old:
        files = {k: v for k, v in files.items() if not k.endswith(' (previous)')}
    return json.dumps({'files': files}, indent=1, sort_keys=True) + '\n'


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


def write_together(outputs, what, inputs=(), overwrite=False):
    """Write [(path, write(tmp_path))] as one set (`OutputSet`): all new, or all as before; never over one of
    `inputs`, and over an existing file only where it is an earlier output of this tool (or `overwrite`)."""
    OutputSet(outputs, what, inputs, overwrite).write()


def text_writer(text):
    """A `write(tmp_path)` for `write_together` that writes `text`."""
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    return write
