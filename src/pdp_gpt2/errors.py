"""Errors a user can cause.  The CLI turns them into one line on stderr and exit status 2."""
from __future__ import annotations

import errno
import os

# A full or read-only disk is the user's to fix, whichever layer was writing.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
DISK_WORDS = ("No space left on device", "Read-only file system", "Disk quota exceeded")


class UsageError(ValueError):
    """Bad input the user can fix (a path, a flag value, a dataset spec)."""


def disk_problem(e: BaseException) -> str | None:
    """What a full or read-only disk says through ``e`` ("No space left on device", ...), or None.
    Writers that are not Python's (safetensors) put the words in their own exception type."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        return e.strerror or os.strerror(e.errno)
    return next((w for w in DISK_WORDS if w in str(e)), None)


class UsageTypeError(UsageError, TypeError):
    """A value of the wrong type (a string where a number or a list belongs); a UsageError all the same."""
