"""One run per output directory: create it, lock it, and give it back at exit.

``claim(output_dir)`` runs before anything else touches the directory, so a path that cannot be
written is one line, not a traceback after minutes of data preparation. ``flock`` on
``<output_dir>/.pdp-gpt2.lock`` is the lock: the kernel drops it when its process dies however it
dies, so a file nobody holds is provably stale and is taken over. Where the filesystem has no
flock, creating the file with ``O_EXCL`` is the lock and a leftover is reported with the ``rm``
that clears it. The file is opened with ``O_NOFOLLOW`` and must be a regular file, so a planted
symlink's target is never overwritten. Under DDP rank 0 alone holds it. ``release_claims``
releases it and removes the directories a run created if it failed before writing into them.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.disk_errors import disk_error, unfinished

LOCK_FILE = ".pdp-gpt2.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# Never through a symlink; O_NONBLOCK so that opening a FIFO planted there cannot hang.
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What open() says when the path is a symlink (O_NOFOLLOW), a directory, a socket or a device.
_NOT_REGULAR = {errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.EMLINK}


def hostname() -> str:
    return socket.gethostname()


def _read_holder(fd: int) -> dict:
    """The holder's JSON, read from our open descriptor of the (regular) lock file."""
    try:
        d = json.loads(os.pread(fd, 1 << 16, 0))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}  # the holder had created the file but not yet written it


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class RunLock:
    """An exclusive lock on a run directory (see the module docstring)."""

    def __init__(self, output_dir: Path):
        self.dir = Path(output_dir)
        self.path = self.dir / LOCK_FILE
        self.fd: int | None = None
        self.inherited = False  # took over a stale lock: the directory held a run before

    def _locked(self, holder: dict) -> UsageError:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f", started {holder['started']}" if "started" in holder else ""
        return UsageError(f"--output_dir {self.dir} is locked by another pdp-gpt2 run ({who}{since}); "
                          "wait for it to finish or choose another --output_dir")

    def _not_regular(self) -> UsageError:
        return UsageError(f"{self.path} is not a regular file (a symlink, directory or other special file is "
                          f"there); pdp-gpt2 will not write through it: remove it, or choose another --output_dir")

    def _open(self) -> tuple[int, bool] | None:
        """(fd, created) of the lock file, None if it vanished between two opens."""
        try:
            try:
                return os.open(self.path, _OPEN | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:  # also a symlink, dangling or not: O_EXCL never follows one
                try:
                    return os.open(self.path, _OPEN), False
                except FileNotFoundError:
                    return None
        except OSError as e:
            if e.errno in _NOT_REGULAR:
                raise self._not_regular() from None
            raise UsageError(f"--output_dir {self.dir} is not writable: {e.strerror}") from None

    def acquire(self) -> "RunLock":
        for _ in range(5):  # only loops when a releasing holder unlinks the file under us
            if (opened := self._open()) is None:
                continue
            fd, created = opened
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device opens fine
                os.close(fd)
                raise self._not_regular()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._locked(holder) from None
            except OSError as e:
                if e.errno not in _NO_FLOCK or not created:
                    holder = _read_holder(fd)
                    os.close(fd)
                    if e.errno in _NO_FLOCK:
                        raise self._stale_or_locked(holder) from None
                    raise
            if not self._same_file(fd):
                os.close(fd)  # the previous holder unlinked it between our open and flock
                continue
            if not created:
                self.inherited = True
                old = _read_holder(fd)
                print(f"pdp-gpt2: taking over the stale lock of pid {old.get('pid', '?')} on "
                      f"{old.get('host', '?')} in {self.dir} (that run is gone: nothing holds its lock)",
                      file=sys.stderr, flush=True)
            self.fd = fd
            info = json.dumps({"pid": os.getpid(), "host": hostname(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
            except OSError as e:  # a full disk: the lock file cannot even say who holds it
                self.release()
                raise UsageError(f"--output_dir {self.dir}: cannot write its lock file {self.path}: {e.strerror}"
                                 f"{_cut_short(self.dir)}; free space on that disk and run again") from None
            return self
        raise UsageError(f"--output_dir {self.dir}: could not take the lock {self.path} (another run is "
                         "starting and stopping there?)")

    def _stale_or_locked(self, holder: dict) -> UsageError:
        if holder.get("host") == hostname() and not _pid_alive(holder.get("pid")):
            return UsageError(f"stale lock {self.path}: pid {holder.get('pid')} on this host is gone (killed?) and "
                              f"this filesystem has no flock to prove it; if no run uses {self.dir}, clear it "
                              f"with: rm {self.path}")
        if holder.get("host") not in (None, hostname()):
            return UsageError(f"{self._locked(holder)}; if that run is gone, clear it with: rm {self.path}")
        return self._locked(holder)

    def _same_file(self, fd: int) -> bool:
        try:
            return os.lstat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding the flock, so no one locks the dying inode
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _cut_short(output_dir: Path) -> str:
    """Names the checkpoints a save cut short (they hold space a resume removes anyway), for a full-disk line."""
    from pdp_gpt2.train.checkpoint import checkpoints, is_complete

    cut = [p.name for p in checkpoints(output_dir) if not is_complete(p)]
    return f" ({', '.join(cut)} in it: incomplete, cut short while saving; deleting it frees space)" if cut else ""


class Claim:
    """A run directory this process created (if it did) and locked (on rank 0)."""

    def __init__(self, output_dir: Path, *, lock: bool):
        self.dir = Path(output_dir)
        self.created: list[Path] = []  # deepest first
        p = self.dir.absolute()
        while not os.path.lexists(p) and p != p.parent:
            self.created.append(p)
            p = p.parent
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"--output_dir {self.dir} exists and is not a directory") from None
        except OSError as e:
            raise UsageError(f"--output_dir {self.dir}: cannot create it ({e.strerror})") from None
        self.lock = None
        try:
            self.lock = RunLock(self.dir).acquire() if lock else None
        except BaseException:
            self.release()
            raise

    @property
    def inherited(self) -> bool:
        return bool(self.lock and self.lock.inherited)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
        for p in self.created:  # a run that failed before its first write leaves no empty directories
            try:
                p.rmdir()
            except OSError:
                break


# Process-wide on purpose: a stack shared by the (nesting) release_claims calls of this process, each of
# which releases exactly the claims made below it, however deep in the call they were made.
_active: list[Claim] = []


def claim(output_dir: Path, *, lock: bool = True) -> Claim:
    """Create and lock ``output_dir``; released when the enclosing ``release_claims`` call returns."""
    c = Claim(output_dir, lock=lock)
    _active.append(c)
    return c


def active_claim(output_dir: Path) -> Claim | None:
    for c in _active:
        if c.dir.absolute() == Path(output_dir).absolute():
            return c
    return None


def release_claims(fn):
    """Decorator: release every claim made during ``fn`` and turn disk errors into one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        depth = len(_active)
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if (usage := disk_error(e, _active[depth].dir if len(_active) > depth else None)) is not None:
                dropped = [p.name for c in _active[depth:] if c.lock is not None  # the lock holder alone removes
                           for p in unfinished(c.dir)]
                if dropped:
                    usage = UsageError(f"{usage}; removed {', '.join(dropped)}, cut short while saving")
                raise usage from None
            raise
        finally:
            while len(_active) > depth:
                _active.pop().release()

    return wrapper
