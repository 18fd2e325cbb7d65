"""A memory card that turned read-only: the unit runs on a copy of its data in memory.

SD cards end their life read-only, and ext4 remounts a card read-only after an error
(``errors=remount-ro``). The settings, pairings and key on it can still be read, so the unit copies
them into the service's runtime directory (RAM, kept across the service's restarts until the next
boot), runs from the copy, and says that changes will not be kept: the owner can still call while
someone replaces the card, instead of a unit that only says it cannot start.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

from appliance.privacy import FORGET_PENDING
from appliance.state import STATE_FILE, StateError, read_only_connection
from appliance.web.wifi import REQUEST_FILE

log = logging.getLogger(__name__)

# What the unit reads at a start, besides the database. Not its outputs (speaker WAV, screen PNG,
# logs), nor what others keep there: lost+found (root's), lgpio's FIFO (from a command run there;
# the service's working directory is /run/emocall).
READ_AT_START = ("identity.key*", FORGET_PENDING, f"{REQUEST_FILE}*")
COPIED = ".copied"  # in the copy once it is whole: a start cut short copies again


# Left by the image's build (image-build/build.sh) in the root's folder under the state partition's
# mount point: seen only when the partition is not mounted over it.
NOT_MOUNTED = ".state-partition-not-mounted"


def check_mounted(data_dir: Path) -> None:
    """Refuse the folder the root holds under the state partition's mount point. The partition did
    not mount (fstab's ``nofail``: a file system its check could not repair), and the unit would
    otherwise start there as a new unit, with a new key its paired units do not know."""
    if (data_dir / NOT_MOUNTED).exists():
        raise StateError(
            f"the memory card's state partition is not mounted at {data_dir} (is the card damaged?): "
            "the unit does not start as a new one in its place"
        )


def read_only(folder: Path) -> bool:
    """Whether ``folder`` (or, before it exists, the nearest folder above it) is on a read-only mount."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def memory_copy(data_dir: Path, runtime: Path | None) -> Path:
    """The copy of ``data_dir`` in ``runtime`` (a new temporary folder without one), made at the
    first start of this boot and used as it is at later ones (with the changes made since)."""
    copy = (runtime or Path(tempfile.mkdtemp(prefix="emocall-"))) / "card-copy"
    if (copy / COPIED).exists():
        return copy
    shutil.rmtree(copy, ignore_errors=True)
    try:
        _copy(data_dir, copy)
    except (OSError, sqlite3.Error) as e:
        # A failing card's read errors, or no room in memory: the files' as OSError, the database's
        # (SQLite's backup) as "disk I/O error" or "database or disk is full". What was copied is
        # removed, so it does not hold the memory the rest of the boot needs.
        shutil.rmtree(copy, ignore_errors=True)
        raise StateError(f"the memory card is read-only and its data cannot be copied: {e}") from e
    (copy / COPIED).touch()
    log.warning("the memory card is read-only: running on a copy of %s in %s", data_dir, copy)
    return copy


def _copy(data_dir: Path, copy: Path) -> None:
    copy.mkdir(mode=0o700, parents=True)
    for pattern in READ_AT_START:
        for item in data_dir.glob(pattern):
            if stat.S_ISREG(item.lstat().st_mode):
                shutil.copy2(item, copy / item.name)
    if (data_dir / STATE_FILE).exists():  # with what is still in its WAL, read through SQLite
        _copy_database(data_dir / STATE_FILE, copy / STATE_FILE)


def _copy_database(card: Path, copy: Path) -> None:
    """SQLite's online backup of the card's database, read without writing (what is still in its
    WAL included, where SQLite can read it so)."""
    source = read_only_connection(card)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    copy.chmod(0o600)
