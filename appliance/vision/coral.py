"""One Coral, one process: a lock file says which process on this machine has the Edge TPU.

A second process that opens a USB accelerator another one holds crashes the first
(google-coral/edgetpu issue 237): ``emocall selftest`` or ``emocall watch`` run beside the service,
or the service's own Edge TPU probe (a child process) while the service already runs models on it.
So a process takes an exclusive ``flock`` on the lock file before it (or its probe) opens the
device, without waiting, and keeps it until it exits (the kernel releases it then, after a crash
too). Another process that cannot take it leaves the device alone and says the Coral is in use.

The lock file lies in the service's runtime directory (``/run/emocall`` on the image, where a
command run beside the service finds it too), else in the temporary folder (a development machine).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from pathlib import Path

from appliance.service import runtime_directory
from appliance.vision import VisionError

LOCK_FILE = "emocall-coral.lock"
# The image's RuntimeDirectory=emocall (image-build/files/systemd/emocall.service): commands run
# beside the service (selftest, watch) have no $RUNTIME_DIRECTORY of their own.
IMAGE_RUNTIME = Path("/run/emocall")


class _Claim:
    """This process's hold on the Coral: the lock file's descriptor while it has it."""

    guard = threading.Lock()
    fd: int | None = None


class CoralInUse(VisionError):
    """Another process has the Coral: this one must not open it."""


def lock_path() -> Path:
    folder = runtime_directory()
    if folder is None:
        folder = IMAGE_RUNTIME if IMAGE_RUNTIME.is_dir() else Path(tempfile.gettempdir())
    return folder / LOCK_FILE


def claim() -> None:
    """Make the Coral this process's (nothing to do when it is already); CoralInUse when another
    process has it, or when that cannot be known (a lock file this user may not open)."""
    with _Claim.guard:
        if _Claim.fd is not None:
            return
        path = lock_path()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise CoralInUse(f"the Coral may be in use by the running unit: cannot open {path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            raise CoralInUse(f"the Coral is in use by the running unit ({holder} holds {path})") from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _Claim.fd = fd


def release() -> None:
    """Give the Coral up: only before this process opened it (an open device stays open)."""
    with _Claim.guard:
        if _Claim.fd is not None:
            os.close(_Claim.fd)  # closing the only descriptor releases the flock
            _Claim.fd = None


def in_use_elsewhere() -> str | None:
    """Why this process may not open the Coral now, or None when it may (for ``emocall selftest``)."""
    with _Claim.guard:
        if _Claim.fd is not None:
            return None
    try:
        claim()
    except CoralInUse as e:
        return str(e)
    release()
    return None


def _holder(fd: int) -> str:
    """Which process holds the lock, as it wrote it ("process 1234"), for the message."""
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"
