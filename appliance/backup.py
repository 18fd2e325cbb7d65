"""A backup of the unit, so that a new release flashed on its card goes on as the same unit.

Flashing an image replaces everything on the card. Before that, the owner downloads a backup from
the settings page (``/backup``); after it, the file goes on the card's boot partition as
``emocall-backup.tar`` and first boot puts it back (``emocall restore``, image-build/files/firstboot)
before the unit first starts: same identity (its paired units still trust it), pairings, guests'
invites, settings and name, configuration and relay account.

The archive is a plain tar of whole files, read into memory member by member (never extracted by
the names it holds), each checked before anything is written:

- ``backup.json``: the format, the unit id and name, when it was made and by which release;
- ``identity.key``: the unit's Ed25519 key (PEM): whoever holds the file can act as this unit;
- ``state.db``: the state database as SQLite's online backup reads it, less the owner's browser
  sessions (a boot's, useless on the next), with the unit's name in effect stored as a setting;
- ``config.toml``, ``relay.password``: the configuration file and the relay account's password,
  where the unit has them.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import __version__, config
from appliance.identity import KEY_FILE, Identity, IdentityError, parse_key, staged_file
from appliance.state import STATE_FILE, StateError, StateStore, read_only_connection

FORMAT = 1
MANIFEST = "backup.json"
IDENTITY = KEY_FILE
CONFIG = "config.toml"
PASSWORD = "relay.password"  # noqa: S105 (the member holding it, not a password)
MEMBERS = (MANIFEST, IDENTITY, STATE_FILE, CONFIG, PASSWORD)
LARGEST = 64 * 1024 * 1024  # far above a unit's state (kilobytes): a file this large is not a backup
FILE_NAME = "emocall-backup.tar"  # what the page offers and first boot looks for


class BackupError(Exception):
    """The backup cannot be made or restored; the message says why."""


@dataclass(frozen=True)
class Restored:
    unit_id: str
    name: str
    made: str  # when the backup was made (UTC, as its manifest says)
    # What another release stored and this one does not take (configuration keys, settings), now at
    # their defaults.
    left_out: tuple[str, ...] = ()


def make_backup(data_dir: Path, name: str, config_file: Path | None, password_file: Path) -> bytes:
    """The unit in ``data_dir`` as a backup archive, its display name now ``name``."""
    try:
        pem = (data_dir / IDENTITY).read_bytes()
        unit_id = _unit_id(pem, IDENTITY)
        files = {IDENTITY: pem, STATE_FILE: _state_copy(data_dir / STATE_FILE, name)}
        for member, path in ((CONFIG, config_file), (PASSWORD, password_file)):
            if path is not None and path.is_file():
                files[member] = path.read_bytes()
    except (OSError, sqlite3.Error, StateError) as e:
        raise BackupError(f"cannot make a backup of {data_dir}: {e}") from e
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = {"format": FORMAT, "unit_id": unit_id, "name": name, "made": made, "release": __version__}
    return _archive({MANIFEST: json.dumps(manifest, indent=1).encode(), **files})


def restore(archive: bytes, data_dir: Path, config_file: Path, *, replace: bool = False) -> Restored:
    """Put the unit in ``archive`` into ``data_dir`` and ``config_file`` (the relay password where
    the restored configuration names it), replacing what is there. Refused, changing nothing, when
    the archive or anything in it cannot be used, or when ``data_dir`` holds another unit's identity
    (unless ``replace``). Every file is written beside its place first, then each renamed into it,
    the key last: a restore cut short leaves no key, or the backup's, and runs again in full."""
    files = _members(archive)
    manifest = _manifest(files)
    pem = files[IDENTITY]
    if _unit_id(pem, f"the backup's {IDENTITY}") != manifest["unit_id"]:
        raise BackupError("the backup's identity key is not the unit its manifest names")
    unit_id = manifest["unit_id"]
    key_file = data_dir / IDENTITY
    if key_file.exists() and key_file.read_bytes() != pem and not replace:
        raise BackupError(
            f"{data_dir} holds another unit's identity: forget everything on that unit first, "
            "or restore with --replace (the unit stopped)"
        )
    config_data, password_file, left_out = _checked_config(files, data_dir)
    state_data, refused = _checked_state(files[STATE_FILE], unit_id)
    restored = Restored(unit_id, manifest["name"], manifest["made"], tuple(left_out + refused))
    staged: list[tuple[Path, Path]] = []  # (written beside, its place)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        user = _service_user(data_dir)
        writes = [(data_dir / STATE_FILE, state_data, 0o600, user)]
        if config_data is not None:
            writes.append((config_file, config_data, 0o644, None))
        if PASSWORD in files and password_file is not None:
            writes.append((password_file, files[PASSWORD], 0o600, user))
        writes.append((key_file, pem, 0o600, user))
        for path, data, mode, owner in writes:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged.append((staged_file(path, data, mode, owner, ".restore"), path))
    except OSError as e:
        for written, _ in staged:
            written.unlink(missing_ok=True)
        raise BackupError(f"cannot write the restored unit: {e}; nothing was changed") from e
    try:
        for written, path in staged:
            if path.name == STATE_FILE:  # the database's old journal would be read into the new one
                for journal in ("-wal", "-shm"):
                    path.with_name(path.name + journal).unlink(missing_ok=True)
            os.replace(written, path)
    except OSError as e:
        raise BackupError(f"the restore stopped half way: {e}; run it again") from e
    return restored


def _service_user(data_dir: Path) -> tuple[int, int] | None:
    """Whom root (first boot) gives what it writes: the owner of the data folder, the service's
    user, who must read it."""
    if os.geteuid() != 0:
        return None
    folder = data_dir.stat()
    return folder.st_uid, folder.st_gid


def _unit_id(pem: bytes, where: str) -> str:
    try:
        return Identity(parse_key(pem, where)).unit_id
    except IdentityError as e:
        raise BackupError(str(e)) from e


def _state_copy(path: Path, name: str) -> bytes:
    """The database without the browser sessions, and the name in effect kept as a setting (a name
    first boot made up, "emocall 4821", would otherwise come out new from the next first boot; a
    stored one an older release took and this one refuses would come back as a new name)."""
    source = read_only_connection(path)
    copy = sqlite3.connect(":memory:")
    try:
        source.backup(copy)
        copy.execute("DELETE FROM sessions")
        copy.execute("INSERT OR REPLACE INTO settings VALUES ('display_name', ?)", (json.dumps(name),))
        copy.commit()
        copy.execute("VACUUM")  # the deleted rows' pages go too
        return copy.serialize()
    finally:
        copy.close()
        source.close()


def _archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _members(archive: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            for info in tar:
                if info.name not in MEMBERS or not info.isfile() or info.name in files:
                    raise BackupError(f"not an emocall backup: it holds {info.name!r}")
                if info.size > LARGEST:
                    raise BackupError(f"not an emocall backup: its {info.name} is {info.size} bytes")
                read = tar.extractfile(info)
                assert read is not None  # a regular file, checked above
                files[info.name] = read.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BackupError(f"not an emocall backup, or a damaged one: {e}") from e
    missing = [m for m in (MANIFEST, IDENTITY, STATE_FILE) if m not in files]
    if missing:
        raise BackupError(f"not an emocall backup, or an incomplete one: no {', '.join(missing)}")
    return files


def _manifest(files: dict[str, bytes]) -> dict[str, Any]:
    try:
        manifest = json.loads(files[MANIFEST])
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise BackupError(f"the backup's {MANIFEST} cannot be read: {e}") from e
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"the backup was made by emocall {manifest.get('release', '?')} in a format this release "
            f"({__version__}) cannot read: restore it with that release or a newer one"
        )
    if not all(isinstance(manifest.get(k), str) for k in ("unit_id", "name", "made")):
        raise BackupError(f"the backup's {MANIFEST} lacks the unit id, its name or when it was made")
    return manifest


def _checked_config(files: dict[str, bytes], data_dir: Path) -> tuple[bytes | None, Path | None, list[str]]:
    """The configuration to write, read as far as this release can (``config.salvage``: a key it
    does not take is left out, not a reason to lose the unit); where its relay password goes; the
    keys left out."""
    if CONFIG not in files:
        return None, None, []
    try:
        restored, text, left_out = config.salvage(files[CONFIG].decode(), f"the backup's {CONFIG}")
    except UnicodeDecodeError as e:
        raise BackupError(f"the backup's configuration cannot be used: not text ({e})") from e
    except config.ConfigError as e:
        raise BackupError(f"the backup's configuration cannot be used: {e}") from e
    if restored.unit.data_dir.resolve() != data_dir.resolve():
        raise BackupError(
            f"the backup's configuration keeps the unit in {restored.unit.data_dir}, this unit's in "
            f"{data_dir}: restore with a --config whose [unit] data_dir is the backup's"
        )
    password = restored.relay.password_file
    if not password.is_absolute():
        raise BackupError(f"the backup's [relay] password_file ({password}) is not an absolute path")
    return text.encode(), password, left_out


def _checked_state(data: bytes, unit_id: str) -> tuple[bytes, list[str]]:
    """The backup's database opened as the unit opens it, its rows whole and its identity the key's,
    in a folder of this process's own (SQLite makes its journal files beside it); the database to
    write, less the settings this release refuses (another release's: their defaults apply, as at
    every start, and the self-test's check passes), and their keys."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / STATE_FILE
        path.write_bytes(data)
        try:
            store = StateStore(path)
            try:
                store.check_intact()
                known = store.meta("unit_id")
                refused = store.drop_refused_settings()
            finally:
                store.close()  # the last connection: its WAL is checkpointed into the file
        except StateError as e:
            raise BackupError(f"the backup's {STATE_FILE} cannot be used: {e}") from e
        if refused:
            data = path.read_bytes()
    if known not in (None, unit_id):
        raise BackupError(f"the backup's {STATE_FILE} belongs to another unit ({known})")
    return data, [f"setting {key}" for key in refused]
