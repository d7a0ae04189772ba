"""One state folder, one node: an exclusive ``flock`` on ``STATE/node.lock``.

The lock is released when the process ends (also on kill -9); the file names the holder's pid,
so a second node started on the same state is refused with a message that says who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from medfed.errors import UsageError

__all__ = ["LOCK_FILE", "release_state_lock", "take_state_lock"]

LOCK_FILE = "node.lock"


def take_state_lock(state: Path) -> int:
    """Hold ``state`` for this process (a file descriptor to release), or a UsageError."""
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise UsageError(
            f"another node is already running with the state folder {state}{pid}; "
            "stop it first, or give this node a state folder of its own (--state)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_state_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
