"""The errors a user meets: a mistake they can fix, and a full disk, each said in one line.

Standard library only.
"""
import errno
import os


class UsageError(Exception):
    """A mistake the user can fix (a bad flag, a missing file, a checkpoint that does not fit).

    `main()` prints its message as one line and exits non-zero; the message names the problem
    and the fix.
    """


class DiskFull(UsageError):
    """A write failed for want of space (or quota); the message says what was kept."""


class BadArgument(UsageError, ValueError):
    """A value passed to the Python API that it cannot use (a sigma of 0, a batch of 0, an alpha of 2): a
    UsageError as the README promises, and a ValueError, as Python's own checks raise."""


def first_line(e, limit=200):
    """The first line of an exception's message (or its type's name): for one-line errors."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]



def is_disk_full(e, folder):
    """Whether exception `e`, raised while writing into `folder`, means that the disk (or quota) is full.

    Python's own writes say so with ENOSPC or EDQUOT, and an OSError with any other errno (EACCES, EROFS,
    ...) is that error, never a full disk. torch.save's C++ writer raises a RuntimeError (or an OSError)
    without an errno ("unexpected pos ..."): for those alone the folder's free space decides, in a folder
    this process may write to on a file system mounted read-write (a read-only one reports 0 bytes free).
    """
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, (OSError, RuntimeError)):
        try:
            st = os.statvfs(folder)
        except OSError:
            return False
        if st.f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK):
            return False
        return st.f_bavail * st.f_frsize < 1 << 20
    return False


def disk_full_message(e, what):
    """The one line for a full disk met outside `atomic_write` (an appended log line, say)."""
    return f'the disk is full ({first_line(e)}) while writing {what}; {_KEPT_NOTE}'


_KEPT_NOTE = ('every file written before is complete (logs keep each finished row, checkpoints their previous '
              'version); free some space and rerun the same command to resume')
