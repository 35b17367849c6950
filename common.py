"""What every part shares: the one error type for a user's mistake, and atomic file writes.

Imports only the standard library, so `visualize/` (numpy, scipy and matplotlib only) can use it.
"""
import os
import tempfile


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class UsageError(Exception):
    """A mistake the user can fix (a bad flag, a missing file, a checkpoint that does not fit).

    `main()` prints its message as one line and exits non-zero; the message names the problem
    and the fix.
    """


def atomic_write(path, write):
    """Write a file so that readers see the old file or the new one, never a part of either.

    `write(tmp_path)` writes the whole content to a temporary file in the same folder; it is
    flushed to disk and renamed over `path` (rename is atomic on POSIX). If `write` fails or the
    process dies, `path` keeps its previous content and the temporary file is removed (or, after
    SIGKILL, left as a hidden `.NAME.*.tmp` beside it, never read by anything).
    """
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + base + '.', suffix='.tmp')
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def remove_stale_temporaries(folder, prefix=''):
    """Remove the temporary files `atomic_write` left in `folder` when its process was killed.

    Called when a run starts, before it writes anything, for the files it owns: every temporary in
    its --ckptdir, those of files named PREFIX* in a --matdir (other runs may be writing there).
    """
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith('.' + prefix) and name.endswith('.tmp'):
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
