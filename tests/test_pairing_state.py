"""The SQLite state store: settings validation, paired units, and surviving kill -9 mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.events import Event, EventBus
from appliance.guests.invites import Invites
from appliance.identity import Identity, unit_id_of
from appliance.relay.contacts import RelayContacts
from appliance.state import (
    DAMAGED_TIME,
    SettingsError,
    StateDamaged,
    StateError,
    StateStore,
    _hashed,
    drop_old_damaged,
    repair,
    repair_cut_short,
)

WRITER = """
import sys, time
from pathlib import Path
from appliance.state import StateStore

store = StateStore(Path(sys.argv[1]))
mode = sys.argv[2]
if mode == "hold":
    # Commit one known state, then stop in the middle of the next transaction.
    store.update_settings({"display_name": "committed"})
    with store.transaction() as db:
        db.execute("INSERT INTO settings (key, value) VALUES ('volume', '7')")
        db.execute("INSERT INTO peers VALUES ('half', 'half', 'h:1', zeroblob(32), 0)")
        print("mid-transaction", flush=True)
        time.sleep(60)
else:
    # Each transaction adds peer k and records k in the display name: the two always agree.
    print("writing", flush=True)
    for k in range(100000):
        with store.transaction() as db:
            db.execute("INSERT INTO peers VALUES (?, ?, 'h:1', zeroblob(32), 0)", (f"u{k}", f"n{k}"))
            db.execute("INSERT OR REPLACE INTO settings VALUES ('display_name', ?)", (f'"n{k}"',))
"""


def test_settings_validate_persist_and_announce(tmp_path: Path) -> None:
    events = EventBus()
    store = StateStore(tmp_path / "state.db", events, defaults={"display_name": "Asha"})
    # Expressions are not shared until the owner says so; saying "no" is an answer too.
    assert store.settings().display_name == "Asha" and not store.settings().share_expressions
    assert not store.sharing_answered()
    store.update_settings({"volume": 40, "announcements": "both", "share_expressions": False})
    store.close()
    # Until the owner names the unit on the page, the configured name is used.
    store = StateStore(
        tmp_path / "state.db", events, defaults={"display_name": "Configured", "auto_answer": True}
    )
    assert store.settings().display_name == "Configured" and store.settings().auto_answer
    store.update_settings({"display_name": " Asha  "})
    with pytest.raises(SettingsError, match="volume"):
        store.update_settings({"volume": 101, "display_name": "never stored"})
    with pytest.raises(SettingsError, match="unknown_field"):
        store.update_settings({"unknown_field": 1})
    store.close()
    again = StateStore(tmp_path / "state.db", defaults={"display_name": "ignored"})
    settings = again.settings()
    assert (settings.display_name, settings.volume, settings.announcements) == ("Asha", 40, "both")
    assert settings.share_expressions is False and again.sharing_answered()
    changed = events.recent("settings.changed")[-1].data["changed"]
    assert changed == ["display_name"]


def test_peers_are_pinned_and_removed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add_peer("a" * 32, "Grandma", "192.0.2.5:8080", b"k" * 32)
    assert store.peer_key("a" * 32) == b"k" * 32
    assert store.peer("grandma") == store.peer("a" * 32)
    assert store.peer_key("b" * 32) is None
    assert store.remove_peer("a" * 32) and not store.remove_peer("a" * 32)
    assert store.peers() == []
    store.check()


def test_deleted_personal_data_is_not_left_in_the_database_files(tmp_path: Path) -> None:
    """A deleted row stayed readable in state.db-wal until a checkpoint, which SQLite makes by
    itself only at 1000 pages: on a quiet unit, for months after the unpairing or the logout."""
    store = StateStore(tmp_path / "state.db")
    store.add_peer("c" * 32, "Cousin", "192.0.2.6:8080", b"j" * 32)
    store.add_peer("a" * 32, "GrandmaSecretName", "192.0.2.5:8080", b"k" * 32)
    token = store.open_session(1)
    assert store.remove_peer("a" * 32)
    store.close_session(token)
    gone = [b"GrandmaSecretName", b"192.0.2.5:8080", _hashed(token).encode()]
    files = {f.name: f.read_bytes() for f in tmp_path.glob("state.db*")}  # as they lie, the store open
    assert "state.db" in files and [(n, w) for n, data in files.items() for w in gone if w in data] == []
    assert [p.name for p in store.peers()] == ["Cousin"] and store.session_left(token, 1) == 0
    store.close()


def _run_writer(db: Path, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), mode], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def test_kill_mid_transaction_keeps_the_committed_state(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    proc = _run_writer(db, "hold")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store = StateStore(db)
    store.check()
    assert store.settings().display_name == "committed"
    assert store.settings().volume == 80
    assert store.peers() == []


def test_kill_during_a_stream_of_writes_leaves_a_consistent_state(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    for delay in (0.05, 0.2, 0.35):
        proc = _run_writer(db, "stream")
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        store = StateStore(db)
        store.check()
        peers = store.peers()
        assert peers, "the writer committed nothing before the kill"
        newest = max(int(p.unit_id[1:]) for p in peers)
        assert store.settings().display_name == f"n{newest}"
        assert len(peers) == newest + 1
        store.remove_peer("u0")  # the next writer starts again at u0
        for p in peers[1:]:
            store.remove_peer(p.unit_id)
        store.close()


def test_selftest_reports_the_state(tmp_path: Path) -> None:
    from appliance import config, selftest

    cfg = config.load(None, {"unit": {"data_dir": str(tmp_path)}}, environ={})
    assert selftest.check_pairing(cfg).ok
    store = StateStore(tmp_path / "state.db")
    store.add_peer("a" * 32, "Grandma", "192.0.2.5:8080", b"k" * 32)
    store.close()
    report = selftest.check_pairing(cfg)
    assert report.ok and "Grandma" in report.detail
    for leftover in tmp_path.glob("state.db*"):
        leftover.unlink()
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    report = selftest.check_pairing(cfg)
    assert not report.ok and "state database" in report.detail
    # The root's folder under the state partition's mount point (the partition did not mount): it
    # read "no state yet ... created at the first run", ok, while the unit said it cannot start.
    under = tmp_path / "under"
    under.mkdir()
    (under / ".state-partition-not-mounted").touch()
    report = selftest.check_pairing(config.load(None, {"unit": {"data_dir": str(under)}}, environ={}))
    assert not report.ok and "state partition is not mounted" in report.detail, report


def test_selftest_fails_the_speaker_without_aplay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit plays through aplay and is silent without it; the audio part read ok whenever the
    kernel listed a sound card."""
    from appliance import config, selftest

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    report = selftest.check_audio(config.load(None, {"speech": {"output": "alsa"}}, environ={}))
    assert not report.ok and "no aplay" in report.detail, report


def test_a_damaged_setting_falls_back_to_the_defaults_and_keeps_the_pairings(tmp_path: Path) -> None:
    """A settings row that is not JSON (disk damage, a hand edit) must not stop the unit starting."""
    db = tmp_path / "state.db"
    store = StateStore(db)
    store.update_settings({"volume": 40, "auto_answer": True, "voice_language": "hi"})
    store.add_peer("a" * 32, "Grandma", "192.0.2.5:8080", b"k" * 32)
    store.close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE settings SET value = '{' WHERE key = 'volume'")
    raw.commit()
    raw.close()
    store = StateStore(db)
    assert store.settings().volume == StateStore(tmp_path / "fresh.db").settings().volume
    # That row alone: the others were all reset, and every change after lost at each restart.
    assert store.settings().auto_answer and store.settings().voice_language == "hi"
    assert [p.name for p in store.peers()] == ["Grandma"]
    with pytest.raises(StateError, match="stored settings are not valid"):
        store.check()
    # The next save of any setting (here, the one shown, unchanged) rewrites the damaged row.
    store.update_settings({"volume": store.settings().volume})
    store.check()
    store.update_settings({"volume": 55})
    store.close()
    assert StateStore(db).settings().volume == 55


def test_the_language_is_read_even_where_the_store_cannot_be_opened(tmp_path: Path) -> None:
    """A unit that cannot start says so in the owner's language, read without writing anything."""
    from appliance.state import StateStore, stored_language

    path = tmp_path / "state.db"
    assert stored_language(path) == "en" and not path.exists()  # nothing there: English, nothing made
    store = StateStore(path)
    store.update_settings({"voice_language": "bn"})
    store.close()
    assert stored_language(path) == "bn"
    # On a card that turned read-only (the folder mounted read-only, in a mount namespace of its own).
    read = "from pathlib import Path; from appliance.state import stored_language as s; "
    read += f"print(s(Path('{path}')))"
    script = f'mount --bind -o ro {tmp_path} {tmp_path} && touch {tmp_path}/x; {sys.executable} -c "{read}"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "Read-only file system" in done.stderr and done.stdout.strip() == "bn", done.stderr
    path.write_bytes(b"not a database")
    assert stored_language(path) == "en"


def damage_a_page(path: Path, page: int) -> None:
    """What a failing SD card does: one page of the file turned to garbage."""
    size = int(sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0])
    with path.open("r+b") as f:
        f.seek(size * (page - 1))
        f.write(b"\xff" * size)


def test_a_damaged_database_is_a_state_error_and_is_kept(tmp_path: Path) -> None:
    """A damaged page made the first read raise SQLite's own error: a traceback, and systemd's
    restart loop with nothing said. It is refused when opened now, and left as it was."""
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.add_peer("b" * 32, "Bela", "192.0.2.2:8080", bytes(32))
    store.update_settings({"display_name": "Asha"})
    store.close()
    damage_a_page(path, 2)
    before = path.read_bytes()
    with pytest.raises(StateError, match=r"state database .* (damaged|cannot open)"):
        StateStore(path)
    assert path.read_bytes() == before


def page_of(path: Path, table: str) -> int:
    """The page ``table``'s rows start on (its root), to damage that one."""
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0])


def paired(store: StateStore, name: str) -> str:
    """Pair ``store`` with a unit named ``name`` (a real key, its id the key's); its id."""
    key = os.urandom(32)
    store.add_peer(unit_id_of(key), name, "192.0.2.2:8080", key)
    return unit_id_of(key)


def test_a_damaged_database_is_repaired_of_what_reads_and_the_damaged_file_kept(tmp_path: Path) -> None:
    """A failing card's damaged page stopped the unit for good: a blind owner needed someone with
    SSH. ``repair`` makes the database anew of every row that reads (here all but the settings'
    page): paired units whose id is their key's, another part's table (relay contacts) and the
    nonces; not the owner's browser sessions nor guests' invites (an old copy of a page could bring
    back a revoked one). The damaged file stays beside it, unchanged."""
    path = tmp_path / "state.db"
    store = StateStore(path)
    bela, chandra = paired(store, "Bela"), paired(store, "Chandra")
    store.add_peer("d" * 32, "Forged", "192.0.2.4:8080", os.urandom(32))  # an id that is not its key's
    store.update_settings({"display_name": "Asha", "volume": 30})
    store.open_session(1.0)
    assert store.first_nonce(bela, "n1", time.time())
    RelayContacts(store).remember(chandra, "chandra@relay.example")
    Invites(Identity.load_or_create(tmp_path / "identity.key"), store).create("Dev", 3600, once=False)
    store.close()
    damage_a_page(path, page_of(path, "settings"))
    before = path.read_bytes()
    with pytest.raises(StateDamaged):
        StateStore(path)

    done = repair(path)

    assert done.peers == ("Bela", "Chandra") and done.rows >= 5, done
    assert done.damaged.name.startswith("state.db.damaged-") and done.damaged.read_bytes() == before
    repaired = StateStore(path)  # opens: whole again
    repaired.check()
    assert [(p.unit_id, p.name) for p in repaired.peers()] == [(bela, "Bela"), (chandra, "Chandra")]
    assert repaired.settings().display_name == "emocall"  # its page was the damaged one: defaults
    assert not repaired.first_nonce(bela, "n1", time.time())  # a replay is still one
    assert RelayContacts(repaired).jid_of(chandra) == "chandra@relay.example"
    assert Invites(Identity.load_or_create(tmp_path / "identity.key"), repaired).listed() == []
    assert repaired._db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    repaired.remove_peer(chandra)  # the damaged file holds Chandra too: gone with the unpairing
    repaired.close()
    assert not list(tmp_path.glob("state.db.damaged-*"))


def test_a_repair_reads_the_wal_and_the_columns_both_releases_have(tmp_path: Path) -> None:
    """Power cut with the newest rows still in the WAL: they are read back from it. A table with a
    column this release does not know (a newer release's) is copied in the columns it does."""
    cut = tmp_path / "cut"
    store = StateStore(tmp_path / "state.db")
    paired(store, "Bela")
    store._db.execute("ALTER TABLE peers ADD COLUMN colour TEXT DEFAULT 'blue'")
    paired(store, "Chandra")  # in the WAL only: the store is still open
    cut.mkdir()
    for file in tmp_path.glob("state.db*"):
        (cut / file.name).write_bytes(file.read_bytes())
    store.close()
    assert (cut / "state.db-wal").stat().st_size > 0
    damage_a_page(cut / "state.db", page_of(tmp_path / "state.db", "settings"))

    done = repair(cut / "state.db")

    assert done.peers == ("Bela", "Chandra"), done
    assert [p.name for p in StateStore(cut / "state.db").peers()] == ["Bela", "Chandra"]


def test_a_database_with_nothing_readable_is_made_new_and_the_oldest_damaged_files_go(tmp_path: Path) -> None:
    """Its first page (the list of tables) gone, nothing can be found: the unit starts with a new,
    empty database. A card failing again and again keeps the three newest damaged files; a file
    the repair did not name is not the unit's to count or delete."""
    path = tmp_path / "state.db"
    (tmp_path / "state.db.damaged-by-hand").write_text("a helper's copy")
    made = []
    for _ in range(5):
        store = StateStore(path)
        paired(store, "Bela")
        store.close()
        damage_a_page(path, 1)
        with pytest.raises(StateDamaged):
            StateStore(path)
        done = repair(path)
        assert (done.rows, done.peers) == (0, ()), done
        made.append(done.damaged.name)
    StateStore(path).check()
    assert len(set(made)) == 5
    kept = sorted(p.name for p in tmp_path.glob("state.db.damaged-*[0-9]Z"))
    assert kept == sorted(made)[-3:] and (tmp_path / "state.db.damaged-by-hand").exists()


def test_a_repair_cut_short_is_made_again_from_the_damaged_files_own_name(tmp_path: Path) -> None:
    """Power lost after the damaged file was linked aside: the next start sees it is still the
    damaged one and repairs it again, reading it (and any WAL it had) through the name it was
    linked to, which it keeps."""
    path = tmp_path / "state.db"
    store = StateStore(path)
    paired(store, "Bela")
    store.close()
    damage_a_page(path, page_of(path, "settings"))
    aside = path.with_name(f"{path.name}.damaged-20261207T120000.000000Z")
    os.link(path, aside)
    assert repair_cut_short(path)

    done = repair(path)

    assert done.damaged == aside and done.peers == ("Bela",), done
    assert {p.name[: len(aside.name)] for p in tmp_path.glob("state.db.damaged-*")} == {aside.name}
    assert not repair_cut_short(path)


def test_a_damaged_file_is_kept_thirty_days(tmp_path: Path) -> None:
    """A damaged file holds names, keys and addresses: deleted after 30 days (hourly while the unit
    runs)."""
    path = tmp_path / "state.db"
    StateStore(path).close()
    damage_a_page(path, 1)
    done = repair(path)
    month_ago = (datetime.now(UTC) - timedelta(days=31)).strftime(DAMAGED_TIME)
    old = tmp_path / f"state.db.damaged-{month_ago}"
    done.damaged.rename(old)
    StateStore(path).close()
    damage_a_page(path, 1)
    newer = repair(path).damaged  # drops the month-old one
    assert not old.exists() and newer.exists()
    drop_old_damaged(path)
    assert newer.exists()


def test_a_card_that_takes_no_more_writes_is_a_state_error(tmp_path: Path) -> None:
    """A full (or failing) card: SQLite's OperationalError got past every caller that handles the
    store's errors (a settings page answered a bare 500); it is a StateError now."""
    store = StateStore(tmp_path / "state.db")
    store._db.execute("PRAGMA query_only = 1")  # every write refused, as on a card that is full
    with pytest.raises(StateError, match="cannot be written"):
        store.update_settings({"display_name": "Asha"})
    with pytest.raises(StateError, match="cannot be written"):
        store.add_peer("b" * 32, "Bela", "192.0.2.2:8080", bytes(32))
    store._db.execute("PRAGMA query_only = 0")
    store.update_settings({"display_name": "Asha"})  # and it works again once it can write
    assert store.settings().display_name == "Asha"


def test_two_saves_at_once_are_announced_in_the_order_they_were_stored(tmp_path: Path) -> None:
    """The speaker, narrator and display follow settings.changed: a save announced after a later one
    (a button press during a page's save) left them on the older settings until the next change."""
    events = EventBus()
    store = StateStore(tmp_path / "state.db", events)
    heard: list[int] = []

    def slow(event: Event) -> None:  # a listener ahead of the others, busy with the first save
        if event.data["settings"]["volume"] == 10:
            time.sleep(0.5)

    events.subscribe(slow)
    events.subscribe(lambda event: heard.append(event.data["settings"]["volume"]))
    first = threading.Thread(target=store.update_settings, args=({"volume": 10},))
    first.start()
    time.sleep(0.15)  # the first save is stored and being announced
    store.update_settings({"volume": 20})
    first.join()
    store.close()
    assert heard == [10, 20]
