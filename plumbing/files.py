"""Files written whole: atomic writes (the old file or the new one, never a part), the clean-up of what a
killed write left, and the checks of a folder before anything is written there.
"""
import errno
import os
import re
import stat
import tempfile

from plumbing.errors import DiskFull, UsageError, first_line, is_disk_full

_UMASK = None


def umask():
    """The process's umask, for giving new files the permissions open() would. Read from /proc where Linux
    says it (setting and restoring it would change it, for a moment, for every thread of the process)."""
    global _UMASK
    if _UMASK is None:
        try:
            with open('/proc/self/status') as f:
                _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith('Umask:'))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0)
            os.umask(_UMASK)
    return _UMASK


# every temporary file this tool makes is named `.BASE.macer-tmp-XXXXXXXX.tmp` (mkstemp's eight
# random characters): recognisably ours, so cleaning up after a killed run never touches a user's file
_TMP_TAG = '.macer-tmp-'
_TMP_NAME = re.compile(r'^\.(?P<base>.+)' + re.escape(_TMP_TAG) + r'[A-Za-z0-9_]{8}\.tmp$')


def atomic_write(path, write):
    """Write a file so that readers see the old file or the new one, never a part of either.

    `write(tmp_path)` writes the whole content to a temporary file in the same folder; it is
    flushed to disk and renamed over `path` (rename is atomic on POSIX). If `write` fails or the
    process dies, `path` keeps its previous content and the temporary file is removed (or, after
    SIGKILL, left as a hidden `.NAME.macer-tmp-XXXXXXXX.tmp` beside it, never read by anything and
    removed by the next run that owns the folder). A full disk raises `DiskFull`, naming what was kept.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    try:
        tmp = temporary(path)
    except OSError as e:
        if is_disk_full(e, folder):
            raise _disk_full(path, e) from None
        raise
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
    fsync_dir(folder)


def _disk_full(path, e):
    kept = 'keeps its previous content' if os.path.exists(path) else 'was not written'
    return DiskFull(f'cannot write {path}: the disk is full ({first_line(e)}); {path} {kept}, and every file '
                    f'written before it is complete; free some space and rerun the same command to resume')


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


def fsync_dir(folder):
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


def file_kind(mode):
    """What a stat mode names, in words: 'a folder', 'a FIFO', 'a device', 'a socket', 'a file'."""
    if stat.S_ISDIR(mode):
        return 'a folder'
    if stat.S_ISFIFO(mode):
        return 'a FIFO'
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return 'a device'
    if stat.S_ISSOCK(mode):
        return 'a socket'
    return 'a file' if stat.S_ISREG(mode) else 'not a regular file'


def check_regular(path, fix, noun='a file'):
    """Refuse, with a UsageError ending in `fix`, a path that is not a regular file (or a link to one) before it
    is read: a FIFO would block the read for ever, a device never end it. `noun`: what it should be."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f'{path} does not exist; {fix}') from None
    except OSError as e:
        what = 'is a loop of symbolic links' if e.errno == errno.ELOOP else f'cannot be read ({e.strerror})'
        raise UsageError(f'{path} {what}; {fix}') from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f'{path} is {file_kind(st.st_mode)}, not {noun}; {fix}')


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


def sha256_of(path):
    """The SHA-256 of a file's bytes (hex)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def same_file(a, b):
    """Whether paths `a` and `b` name one file: the same path once links are resolved, or the same inode (a
    hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def temporary(path):
    """A new empty file beside `path`, named as `remove_stale_temporaries` recognises, with open()'s permissions."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.' + os.path.basename(path) + _TMP_TAG,
                               suffix='.tmp')
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600
    return tmp
