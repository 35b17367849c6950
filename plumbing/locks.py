"""One process at a time: the lock a run holds on its folder (or on its result files) while it writes."""
import errno
import json
import os
import platform
import sys
import time

from plumbing.errors import DiskFull, UsageError, first_line, is_disk_full
from plumbing.files import file_kind, umask


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
                # never through a link, never blocking on a FIFO: a planted link would make the lock's note
                # overwrite the file it points to
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666 & ~umask())
            except OSError as e:
                if e.errno == errno.EISDIR:
                    raise UsageError(f'{self.path} is a folder, not a lock file; move it away') from None
                if e.errno == errno.ELOOP:
                    raise UsageError(f'{self.path} is a symbolic link, not a lock file: a lock is never written '
                                     f'through a link; remove the link (nothing was written)') from None
                if is_disk_full(e, os.path.dirname(self.path) or '.'):
                    raise DiskFull(f'cannot create the lock file {self.path}: the disk is full ({first_line(e)}); '
                                   f'nothing was written') from None
                raise UsageError(f'cannot create the lock file {self.path} ({e.strerror}); choose a folder you '
                                 f'can write to') from None
            kind = file_kind(os.fstat(fd).st_mode)
            if kind != 'a file':
                os.close(fd)
                raise UsageError(f'{self.path} is {kind}, not a lock file; move it away (nothing was written)')
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
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                h = json.loads(os.read(fd, 1 << 16).decode())
            finally:
                os.close(fd)
            return (f'process {h["pid"]} on host {h["host"]} (started {h["started"]}: '
                    f'{h["command"][:120]})')
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
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
