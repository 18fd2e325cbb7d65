"""A unit's backup (appliance/backup.py): downloaded from the settings page, put back by `emocall
restore` on a card flashed anew, and refused, changing nothing, when it cannot be used."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from appliance import cli
from appliance.app import Appliance
from appliance.backup import make_backup
from appliance.call.lan import free_port
from appliance.config import load
from appliance.identity import Identity
from appliance.state import StateStore
from tests.test_hardening_button import Browser
from tests.test_web_pages import _said_code


def fresh_image(data_dir: Path) -> str:
    """The configuration a newly flashed card starts with (no unit answers on its port)."""
    return f'[camera]\nsource = "pattern"\n[unit]\ndata_dir = "{data_dir}"\n[web]\nport = {free_port()}\n'


def unit_config(home: Path) -> Path:
    """A unit's configuration file, as /etc/emocall/config.toml holds it, with a relay password."""
    password = home / "etc" / "relay.password"
    password.parent.mkdir(parents=True)
    password.write_text("correct horse\n")
    password.chmod(0o600)
    path = home / "etc" / "config.toml"
    path.write_text(
        f'[unit]\nname = "Asha"\ndata_dir = "{home / "data"}"\n[camera]\nsource = "pattern"\n'
        f'[web]\nhost = "127.0.0.1"\nport = {free_port()}\ndiscovery = false\n[speech]\noutput = "wav"\n'
        '[display]\nbackend = "off"\n[call]\naudio_in = "none"\n[button]\nenabled = false\n'
        f'[relay]\npassword_file = "{password}"\n'
    )
    return path


def test_a_backup_from_the_page_brings_the_same_unit_back_on_a_card_flashed_anew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = unit_config(tmp_path)
    bela = Identity.load_or_create(tmp_path / "bela.key")
    unit = Appliance(load(config_file, environ={}), config_file).start()
    try:
        assert unit.store is not None and unit.identity is not None and unit.web is not None
        unit.store.add_peer(bela.unit_id, "Bela", "192.0.2.7:8080", bela.public_key)
        unit.store.update_settings({"volume": 40, "auto_answer": True})
        asha = unit.identity
        stranger = Browser(unit.web.port)
        stranger.send("GET", "/api/owner")
        status, headers, _ = stranger.fetch("/backup", {})
        assert status == 401 and "Content-Disposition" not in headers  # the owner's alone
        browser = Browser(unit.web.port)
        browser.ask_for_code()
        assert browser.send("POST", "/api/owner/login", {"code": _said_code(unit)})[0] == 200
        status, page = browser.form("/settings")
        assert status == 200 and "Download a backup" in page
        csrf, browser.csrf = browser.csrf, "from-another-site"
        assert browser.fetch("/backup", {})[0] == 403
        browser.csrf = csrf
        status, headers, archive = browser.fetch("/backup", {})
        # A restore while the unit runs would be lost under it (and the unit go on with its old key).
        (tmp_path / "emocall-backup.tar").write_bytes(archive)
        assert cli.main(["--config", str(config_file), "restore", str(tmp_path / "emocall-backup.tar")]) == 1
        assert "the unit is running" in capsys.readouterr().err
        # A backup that cannot be made: the settings page says why (no page without a way back).
        (tmp_path / "data" / "identity.key").rename(tmp_path / "key.aside")
        refused = browser.form("/backup", {})[1]
        assert (
            "<title>Error: No backup was made: cannot make a backup of" in refused
            and "<h1>Settings</h1>" in refused
        )
        (tmp_path / "key.aside").rename(tmp_path / "data" / "identity.key")
    finally:
        unit.close()
    assert status == 200, archive[:300]
    assert headers["Content-Disposition"] == 'attachment; filename="emocall-backup.tar"'
    assert headers["Cache-Control"] == "no-store"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        held = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    assert set(held) == {"backup.json", "identity.key", "state.db", "config.toml", "relay.password"}
    assert json.loads(held["backup.json"])["unit_id"] == asha.unit_id

    # A new release flashed: the data folder gone, the image's own configuration, no relay password.
    saved = tmp_path / "emocall-backup.tar"
    saved.write_bytes(archive)
    original = config_file.read_text()
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "etc" / "relay.password").unlink()
    config_file.write_text(fresh_image(tmp_path / "data"))
    assert cli.main(["--config", str(config_file), "restore", str(saved)]) == 0
    assert config_file.read_text() == original
    password = tmp_path / "etc" / "relay.password"
    assert password.read_text() == "correct horse\n" and password.stat().st_mode & 0o777 == 0o600

    again = Appliance(load(config_file, environ={}), config_file).start()
    try:
        assert again.identity is not None and again.store is not None
        # The key its paired units pinned: they still trust it.
        assert again.identity.public_key == asha.public_key and again.identity.unit_id == asha.unit_id
        assert [(p.unit_id, p.name) for p in again.store.peers()] == [(bela.unit_id, "Bela")]
        settings = again.store.settings()
        assert (settings.volume, settings.auto_answer, settings.display_name) == (40, True, "Asha")
        again.store.update_settings({"volume": 90})
    finally:
        again.close()
    # Restored once more (first boot cut short after it, the flasher's file taken again): whole again.
    config_file.write_text(fresh_image(tmp_path / "data"))
    assert cli.main(["--config", str(config_file), "restore", str(saved)]) == 0
    assert config_file.read_text() == original
    store = StateStore(tmp_path / "data" / "state.db")
    assert store.settings().volume == 40
    store.close()


def asha_paired_with_bela(tmp_path: Path) -> Path:
    """Asha's data folder (its key, its state with Bela paired); Bela's key is ``bela.key`` beside it."""
    data = tmp_path / "asha"
    me = Identity.load_or_create(data / "identity.key")
    store = StateStore(data / "state.db")
    store.remember_identity(me.unit_id)
    bela = Identity.load_or_create(tmp_path / "bela.key")
    store.add_peer(bela.unit_id, "Bela", "192.0.2.7:8080", bela.public_key)
    store.close()
    return data


@pytest.fixture
def backup(tmp_path: Path) -> dict[str, bytes]:
    """The members of a backup of Asha's unit, made here."""
    archive = make_backup(asha_paired_with_bela(tmp_path), "Asha", None, tmp_path / "no.password")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def archive_of(files: dict[str, bytes], names: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo((names or {}).get(member, member))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def another_units_state(tmp_path: Path) -> bytes:
    store = StateStore(tmp_path / "another" / "state.db")
    store.remember_identity("0" * 32)
    store.close()
    return (tmp_path / "another" / "state.db").read_bytes()


Damage = Callable[[dict[str, bytes], Path], bytes]
DAMAGED: dict[str, tuple[Damage, str]] = {
    "not a tar": (lambda f, _: b"PK\x03\x04 a zip file", "not an emocall backup, or a damaged one"),
    "cut short": (lambda f, _: archive_of(f)[:1500], "not an emocall backup"),
    "a path out of the folder": (
        lambda f, _: archive_of(f, {"state.db": "../../etc/state.db"}),
        "it holds '../../etc/state.db'",
    ),
    "no key": (
        lambda f, _: archive_of({k: v for k, v in f.items() if k != "identity.key"}),
        "no identity.key",
    ),
    "another unit's key": (
        lambda f, tmp: archive_of({**f, "identity.key": (tmp / "bela.key").read_bytes()}),
        "not the unit its manifest names",
    ),
    "a damaged database": (
        lambda f, _: archive_of({**f, "state.db": f["state.db"][:4096] + b"\x00" * 8192}),
        "state.db cannot be used",
    ),
    "another unit's database": (
        lambda f, tmp: archive_of({**f, "state.db": another_units_state(tmp)}),
        "belongs to another unit",
    ),
    "a newer format": (
        lambda f, _: archive_of(
            {**f, "backup.json": json.dumps({**json.loads(f["backup.json"]), "format": 2}).encode()}
        ),
        "in a format this release",
    ),
    "a configuration that is not TOML": (
        lambda f, _: archive_of({**f, "config.toml": b"[camera\nsource = 'sideways'\n"}),
        "the backup's configuration cannot be used",
    ),
    "a configuration keeping the unit elsewhere": (
        lambda f, _: archive_of({**f, "config.toml": b"[unit]\ndata_dir = '/elsewhere'\n"}),
        "keeps the unit in /elsewhere",
    ),
    "a relay password named from the working folder": (
        lambda f, tmp: archive_of(
            {
                **f,
                "config.toml": f"[unit]\ndata_dir = '{tmp / 'new'}'\n[relay]\npassword_file = 'pw'".encode(),
            }
        ),
        "password_file (pw) is not an absolute path",
    ),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_backup_that_cannot_be_used_is_refused_and_changes_nothing(
    kind: str, backup: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, said = DAMAGED[kind]
    target = tmp_path / "new"
    target.mkdir()
    (target / "state.db").write_bytes(b"the new card's own state")
    config_file = tmp_path / "config.toml"
    config_file.write_text(fresh_image(target))
    before = {p.name: p.read_bytes() for p in target.iterdir()}, config_file.read_text()
    saved = tmp_path / "emocall-backup.tar"
    saved.write_bytes(damage(backup, tmp_path))
    assert cli.main(["--config", str(config_file), "restore", str(saved)]) == 1
    assert said in capsys.readouterr().err
    assert ({p.name: p.read_bytes() for p in target.iterdir()}, config_file.read_text()) == before
    assert not (tmp_path / "etc").exists()


def test_a_unit_with_its_own_identity_is_replaced_only_when_asked(
    backup: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new"
    mine = Identity.load_or_create(target / "identity.key")
    config_file = tmp_path / "config.toml"
    config_file.write_text(fresh_image(target))
    saved = tmp_path / "emocall-backup.tar"
    saved.write_bytes(archive_of(backup))
    assert cli.main(["--config", str(config_file), "restore", str(saved)]) == 1
    assert "holds another unit's identity" in capsys.readouterr().err
    assert Identity.load_or_create(target / "identity.key").unit_id == mine.unit_id
    assert cli.main(["--config", str(config_file), "restore", "--replace", str(saved)]) == 0
    restored = Identity.load_or_create(target / "identity.key").unit_id
    assert restored == json.loads(backup["backup.json"])["unit_id"] != mine.unit_id
    store = StateStore(target / "state.db")
    assert [p.name for p in store.peers()] == ["Bela"] and store.settings().display_name == "Asha"
    store.close()


def test_links_left_in_the_data_folder_do_not_lead_the_restore_elsewhere(
    backup: dict[str, bytes], tmp_path: Path
) -> None:
    """The data folder is the service user's; root restores into it at first boot. A link that user
    left where the restore writes its files would have made root write the unit's key over any file."""
    target, victim = tmp_path / "new", tmp_path / "shadow"
    target.mkdir()
    victim.write_text("root's file\n")
    for name in ("identity.key", "state.db"):
        for suffix in (".tmp", ".restore"):
            (target / (name + suffix)).symlink_to(victim)
    config_file = tmp_path / "config.toml"
    config_file.write_text(fresh_image(target))
    saved = tmp_path / "emocall-backup.tar"
    saved.write_bytes(archive_of(backup))
    assert cli.main(["--config", str(config_file), "restore", str(saved)]) == 0
    assert victim.read_text() == "root's file\n"
    key = target / "identity.key"
    assert not key.is_symlink() and key.read_bytes() == backup["identity.key"]


def with_settings(state: bytes, tmp_path: Path, rows: dict[str, str]) -> bytes:
    """``state`` with these raw settings rows, as an older release may have stored them."""
    path = tmp_path / "edited.db"
    path.write_bytes(state)
    with closing(sqlite3.connect(path)) as db, db:
        db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", rows.items())
    return path.read_bytes()


def test_a_backup_from_another_release_brings_the_unit_back_with_what_this_one_takes(
    backup: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name an older release took (a braille blank alone), a value it allowed and a key it had
    but this release does not: the unit comes back as itself, those at their defaults and named."""
    target = tmp_path / "new"
    config_file = tmp_path / "config.toml"
    config_file.write_text(fresh_image(target))
    older = {
        **backup,
        "state.db": with_settings(
            backup["state.db"], tmp_path, {"display_name": '"\u2800"', "volume": "900"}
        ),
        "config.toml": (
            f"# the owner's notes\n[unit]\ndata_dir = '{target}'\n[camera]\nsource = 'sideways'\n"
            'fps = 10.0\nretired_key = 1\n"odd\\nkey" = 2\n[web]\nport = 8123\n'
            '[call]\nice_servers = "stun:a.example:3478,\\nstun:b.example:3478"\n'
        ).encode(),
    }
    saved = tmp_path / "emocall-backup.tar"
    saved.write_bytes(archive_of(older))
    assert cli.main(["--config", str(config_file), "restore", str(saved)]) == 0
    said = capsys.readouterr()
    assert "restored Asha" in said.out
    assert (
        "does not take, now at their defaults: camera.source, camera.retired_key, camera.odd\nkey, "
        "setting display_name, setting volume" in said.err
    )
    restored = load(config_file, environ={})
    assert (restored.camera.fps, restored.camera.source, restored.web.port) == (10.0, "auto", 8123)
    assert restored.call.ice_servers == "stun:a.example:3478,\nstun:b.example:3478"  # written back escaped
    store = StateStore(target / "state.db")
    try:
        assert [p.name for p in store.peers()] == ["Bela"] and store.settings().volume == 80
        store.check()  # the self-test's check: the refused rows are gone, not only overridden
    finally:
        store.close()


def test_a_name_this_release_refuses_is_backed_up_as_the_name_in_effect(tmp_path: Path) -> None:
    data = asha_paired_with_bela(tmp_path)
    (data / "state.db").write_bytes(
        with_settings((data / "state.db").read_bytes(), tmp_path, {"display_name": '"\u2800"'})
    )
    for journal in ("-wal", "-shm"):
        (data / f"state.db{journal}").unlink(missing_ok=True)
    archive = make_backup(data, "emocall 4821", None, tmp_path / "no.password")
    target = tmp_path / "new"
    config_file = tmp_path / "config.toml"
    config_file.write_text(fresh_image(target))
    (tmp_path / "emocall-backup.tar").write_bytes(archive)
    assert cli.main(["--config", str(config_file), "restore", str(tmp_path / "emocall-backup.tar")]) == 0
    store = StateStore(target / "state.db")
    try:
        store.check()  # every setting valid again
        assert store.settings().display_name == "emocall 4821"
    finally:
        store.close()
