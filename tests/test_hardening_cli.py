"""The command line a newcomer meets: `emocall demo` pairs for real, `--config` in both places, log
lines a person can compare."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from appliance import config, selftest
from appliance.audio.wav import read_wav
from appliance.call.lan import free_port, host_address
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.state import StateStore

from .test_pairing_state import damage_a_page, page_of, paired

ROOT = Path(__file__).resolve().parents[1]
EMOCALL = [sys.executable, "-m", "appliance.cli"]
STOP_WITHIN_S = 20.0


def test_demo_pairs_with_the_code_one_unit_says_and_the_other_accepts(tmp_path: Path) -> None:
    host_address()  # skips where there is only loopback (aiortc never offers 127.0.0.1)
    command = [*EMOCALL, "demo", "--seconds", "4", "--data-dir", str(tmp_path)]
    command += ["--a-source", "pattern", "--b-source", "pattern"]
    demo = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    out = demo.stdout
    assert demo.returncode == 0, out[-3000:] + demo.stderr[-3000:]
    said = re.search(r"^Bela shows and says the pairing code (\d( \d){5}); typed on Asha's page$", out, re.M)
    assert said, out[-3000:]
    assert out.index("[Bela] pairing.code: New pairing code") < said.start()
    accepted = out.index("Asha accepted the code: paired with Bela")
    assert said.start() < accepted < out.index("[Asha] call.state: connected to Bela")
    assert "[Bela] pairing.done: Paired with Asha" in out
    for me in ("asha", "bela"):
        log = (tmp_path / me / "unit.log").read_text()
        assert "object at 0x" not in log, log


def _wait_ready(port: int, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                return str(r.read())
        except OSError:
            time.sleep(0.3)
    raise AssertionError("the unit did not answer within 60 s")


@pytest.mark.parametrize("after", [True, False], ids=["run --config F", "--config F run"])
def test_run_takes_config_before_or_after_the_command(tmp_path: Path, after: bool) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[unit]\nname = "Kitchen"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[camera]\nsource = "pattern"\n[web]\nhost = "127.0.0.1"\nport = {port}\ndiscovery = false\n'
        '[speech]\noutput = "wav"\n[display]\nbackend = "off"\n[button]\nenabled = false\n'
    )
    where = ["run", "--config", str(config)] if after else ["--config", str(config), "run"]
    proc = subprocess.Popen([*EMOCALL, *where], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert '"name":"Kitchen"' in _wait_ready(port, proc).replace(" ", "")
    finally:
        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    stopped_in = time.monotonic() - stop
    assert proc.returncode == 0, err[-3000:]
    # systemd waits 90 s (TimeoutStopSec's default) before it kills the service.
    assert stopped_in < STOP_WITHIN_S, err[-3000:]
    print(f"stopped {stopped_in:.1f} s after SIGTERM")
    assert "\x1b[" not in err  # plain log lines, no colour codes


def test_config_after_the_command_is_checked_like_before(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    for where in (["config", "--config", str(missing)], ["--config", str(missing), "config"]):
        result = subprocess.run([*EMOCALL, *where], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 2 and str(missing) in result.stderr


def test_log_lines_name_things_a_person_can_compare(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        me = Identity.load_or_create(tmp_path / "identity.key")

        class Listener:
            def on_event(self, _: object) -> None:
                raise ValueError("broken listener")

        events = EventBus()
        events.subscribe(Listener().on_event)
        events.publish("unit.ready", "ready")
    lines = [r.getMessage() for r in caplog.records]
    assert any(me.unit_id in line for line in lines), lines
    assert any("Listener.on_event failed on unit.ready" in line for line in lines), lines
    assert not any(re.search(r"object at 0x|0x[0-9a-f]{8,}", line) for line in lines), lines


def test_a_unit_loads_no_library_it_does_not_use() -> None:
    """TensorFlow, SciPy, pandas and matplotlib are for training and benchmarks; slixmpp only with a
    relay; `emocall say`, `call` and `config` load none of the call, vision and display libraries."""
    check = (
        "import sys; import appliance.cli as cli; light = set(sys.modules); import appliance.app; "
        "heavy = ('tensorflow', 'scipy', 'pandas', 'matplotlib', 'slixmpp'); "
        "print(sorted(m for m in heavy if m in sys.modules), sorted({'aiortc', 'cv2', 'pygame'} & light))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr[-2000:]


def test_verbose_logs_no_relay_stanza_unless_asked_for_by_name() -> None:
    """`-v` logged every XMPP stanza whole (slixmpp's debug lines): guests' invites, which ring the
    unit for up to a year, in the journal. `--debug slixmpp` still shows them."""
    check = (
        "import logging, appliance.cli as cli; level = lambda: logging.getLogger('slixmpp.xmlstream')"
        ".getEffectiveLevel(); cli.main(['-v', 'config']); a = level(); "
        "cli.main(['-v', '--debug', 'slixmpp', 'config']); print('levels', a, level())"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=ROOT)
    levels = out.stdout.splitlines()[-1]
    assert levels == f"levels {logging.INFO} {logging.DEBUG}", out.stdout[-500:] + out.stderr


@pytest.mark.parametrize("damage", ["no_key", "another_key"])
def test_a_damaged_identity_key_is_set_aside_and_a_new_one_made_and_said(tmp_path: Path, damage: str) -> None:
    """A damaged identity key (a failing card) stopped the unit for good ("cannot start"), and a
    blind owner needed someone with SSH. `emocall run` sets it aside unchanged, makes a new
    identity, and says what the owner must do, naming the units to pair with again; their pairing
    is kept, so a call to them says "does not know this unit any more. Pair again". A key that still
    reads but is another (a flipped bit of its secret) is said the same way."""
    data = tmp_path / "data"
    store = StateStore(data / "state.db")
    paired(store, "Bela")
    store.remember_identity(Identity.load_or_create(data / "identity.key").unit_id)
    store.close()
    Identity.load_or_create(tmp_path / "another.key")
    another = (tmp_path / "another.key").read_bytes()
    (data / "identity.key").write_bytes(b"not a key" if damage == "no_key" else another)
    line = _said_and_shown(
        tmp_path, data, "This unit's key has changed, perhaps because the memory card damaged it."
    )
    assert line.endswith("will not know this unit until you pair with them again: Bela."), line
    aside = [p.read_bytes() for p in data.glob("identity.key.damaged-*[0-9]Z")]
    assert aside == ([b"not a key"] if damage == "no_key" else [])
    renewed = Identity.load_or_create(data / "identity.key")
    assert (data / "identity.key").read_bytes() != b"not a key"
    store = StateStore(data / "state.db")
    assert store.meta("unit_id") == renewed.unit_id  # recorded once said: not said again
    assert [p.name for p in store.peers()] == ["Bela"]
    store.close()


def test_an_identity_key_that_cannot_be_read_is_said_plainly_not_as_a_traceback(tmp_path: Path) -> None:
    """Not damaged but unreadable (here a folder in its place; a wrong owner): the unit cannot
    start, and says why in its log, leaving the file as it is."""
    data = tmp_path / "data"
    (data / "identity.key").mkdir(parents=True)
    command = [*EMOCALL, "run", "--data-dir", str(data), "--port", str(free_port()), "--source", "pattern"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "cannot use the identity key" in result.stderr and (data / "identity.key").is_dir()
    assert not list(data.glob("identity.key.damaged-*"))


def test_a_damaged_state_database_is_repaired_said_and_kept(tmp_path: Path) -> None:
    """One damaged page of state.db (a failing card) stopped the unit for good ("cannot start"),
    and a blind owner needed someone with SSH. `emocall selftest` still names the damage; `emocall
    run` makes the database anew of what reads (the paired unit), says so and what to do, shows it,
    and keeps the damaged file unchanged beside it for whoever helps."""
    data = tmp_path / "data"
    store = StateStore(data / "state.db")
    paired(store, "Bela")
    store.update_settings({"display_name": "Kitchen"})
    store.close()
    damage_a_page(data / "state.db", page_of(data / "state.db", "settings"))
    before = (data / "state.db").read_bytes()
    report = selftest.check_pairing(config.load(None, {"unit": {"data_dir": str(data)}}, environ={}))
    assert not report.ok and "state database" in report.detail, report
    assert (data / "state.db").read_bytes() == before

    sentence = "The memory card had damaged this unit's settings. The unit kept what it could read."
    line = _said_and_shown(tmp_path, data, sentence)
    kept = "Ask someone who helps you to check the memory card. Paired units kept: Bela."
    assert line.endswith(kept), line  # in the same sentence: what was kept, by name
    (damaged,) = data.glob("state.db.damaged-*[0-9]Z")
    assert damaged.read_bytes() == before
    repaired = StateStore(data / "state.db")
    assert [p.name for p in repaired.peers()] == ["Bela"]
    repaired.close()
    assert selftest.check_pairing(config.load(None, {"unit": {"data_dir": str(data)}}, environ={})).ok


def test_a_unit_that_cannot_start_says_so_once_per_boot(tmp_path: Path) -> None:
    """systemd starts a failed unit again every 15 s: the owner hears why it is silent once, in
    the language of the settings, not every few seconds (the mark lives until the next boot)."""
    data, runtime, said = tmp_path / "data", tmp_path / "run", tmp_path / "said.wav"
    data.mkdir()
    runtime.mkdir()
    (data / "identity.key").mkdir()  # a key it cannot read
    config = tmp_path / "config.toml"
    config.write_text(f'[speech]\noutput = "wav"\nwav_file = "{said}"\n')
    command = [*EMOCALL, "--config", str(config), "run", "--data-dir", str(data), "--source", "pattern"]
    command += ["--port", str(free_port())]
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime)}
    for start in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        assert result.returncode == 1 and "identity.key" in result.stderr, result.stderr[-3000:]
        if start == 0:
            pcm, rate = read_wav(said)
            assert np.abs(pcm).max() > 1000 and pcm.size / rate > 2, "nothing was said"
            said.unlink()
    assert not said.exists(), "said again at the next start"


def test_a_web_address_that_does_not_resolve_is_said_not_a_traceback(tmp_path: Path) -> None:
    """waitress raises ValueError for a host name that does not resolve: it was not among the
    failures that are said, so a typo in [web] host was a traceback and silence, every 15 s."""
    said = tmp_path / "said.wav"
    config = tmp_path / "config.toml"
    speaker = f'[speech]\noutput = "wav"\nwav_file = "{said}"\n'
    config.write_text(f'[web]\nhost = "no-such-host.invalid"\n{speaker}')
    command = [*EMOCALL, "--config", str(config), "run", "--data-dir", str(tmp_path / "data")]
    command += ["--source", "pattern", "--port", str(free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "cannot listen on no-such-host.invalid" in result.stderr and "check [web] host" in result.stderr
    pcm, rate = read_wav(said)
    assert np.abs(pcm).max() > 1000 and pcm.size / rate > 2, "nothing was said"


def test_a_configuration_that_cannot_be_used_is_said_once_per_boot(tmp_path: Path) -> None:
    """A wrong value in the configuration file: `emocall run` stops before anything speaks, and
    systemd starts it again every 15 s. The unit says that it cannot start, once, with the speaker
    and the data folder of the environment and the flags."""
    data, runtime, said = tmp_path / "data", tmp_path / "run", tmp_path / "said.wav"
    runtime.mkdir()
    config = tmp_path / "bad.toml"
    config.write_text('[call]\nring_seconds = "long"\n')
    command = [*EMOCALL, "run", "--config", str(config), "--data-dir", str(data)]
    env = {
        **os.environ,
        "RUNTIME_DIRECTORY": str(runtime),
        "EMOCALL_SPEECH__OUTPUT": "wav",
        "EMOCALL_SPEECH__WAV_FILE": str(said),
    }
    for start in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        assert result.returncode == 2 and "ring_seconds" in result.stderr, result.stderr[-3000:]
        if start == 0:
            pcm, _ = read_wav(said)
            said.unlink()
    assert not said.exists(), "said again at the next start"
    sentence = tmp_path / "cannot-start.wav"
    say = [*EMOCALL, "say", "--phrase", "cannot_start", "--data-dir", str(data), "--wav", str(sentence)]
    subprocess.run(say, check=True, capture_output=True, timeout=60, cwd=ROOT)
    assert np.abs(pcm).max() > 1000 and np.array_equal(
        np.trim_zeros(pcm), np.trim_zeros(read_wav(sentence)[0])
    )


def _run_on_read_only_card(
    tmp_path: Path, data: Path, runtime: Path, settings: str
) -> tuple[int, subprocess.Popen[bytes], Path]:
    """``emocall run`` on ``data`` mounted read-only (in a mount namespace of its own), speaking into
    ``said.wav``: its port, its process and its log."""
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[camera]\nsource = "pattern"\n[web]\nhost = "127.0.0.1"\nport = {port}\ndiscovery = false\n'
        f'[speech]\noutput = "wav"\nwav_file = "{tmp_path / "said.wav"}"\nrate_wpm = 450\n'
        f"[button]\nenabled = false\n{settings}"
    )
    run = f"{sys.executable} -m appliance.cli -v --config {config} run --data-dir {data}"
    script = f"mount --bind -o ro {data} {data} && exec {run}"
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime), "STATE_DIRECTORY": str(data)}  # as systemd
    log = tmp_path / "unit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stderr=out, cwd=ROOT, env=env)
    return port, proc, log


def test_a_unit_on_a_read_only_card_runs_from_memory_and_says_so(tmp_path: Path) -> None:
    """An SD card at the end of its life turns read-only (and ext4 remounts one so after an error):
    the unit still starts, with its name and key from the card, from a copy in the service's runtime
    directory; it says that changes will not be kept, and writes nothing to the card."""
    from appliance.state import StateStore

    data, runtime = tmp_path / "data", tmp_path / "run"
    data.mkdir(mode=0o700)
    runtime.mkdir()
    me = Identity.load_or_create(data / "identity.key")
    store = StateStore(data / "state.db")
    store.update_settings({"display_name": "Kitchen"})  # left in the WAL: the copy must see it
    # What else lies in the image's data partition: lgpio's FIFO (the service's working directory)
    # and the file system's lost+found.
    os.mkfifo(data / ".lgd-nfy0")
    (data / "lost+found").mkdir()
    card = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    port, proc, log = _run_on_read_only_card(tmp_path, data, runtime, '[display]\nbackend = "off"\n')
    try:
        status = _wait_ready(port, proc).replace(" ", "")
        assert '"name":"Kitchen"' in status and "thememorycardisread-only" in status, status
        _wait_said(log, "The unit's memory card can no longer be written.", 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == card  # the card as it was
    store.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    copy = runtime / "card-copy"
    assert Identity.load_or_create(copy / "identity.key").unit_id == me.unit_id


def test_a_read_only_card_that_cannot_be_copied_into_memory_is_said_not_a_traceback(tmp_path: Path) -> None:
    """The card turned read-only and the runtime directory (RAM) has no room for its database:
    SQLite's backup fails ("database or disk is full"), and the unit says that it cannot start
    instead of dying in a traceback that nobody hears."""
    import sqlite3

    from appliance.state import StateStore

    data, runtime, said = tmp_path / "data", tmp_path / "run", tmp_path / "said.wav"
    data.mkdir(mode=0o700)
    runtime.mkdir()
    Identity.load_or_create(data / "identity.key")
    StateStore(data / "state.db").close()
    with sqlite3.connect(data / "state.db") as db:  # a database larger than the room left in RAM
        db.execute("CREATE TABLE filler (x)")
        db.executemany("INSERT INTO filler VALUES (?)", [("x" * 1000,)] * 500)
    db.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[speech]\noutput = "wav"\nwav_file = "{said}"\n')
    run = f"{sys.executable} -m appliance.cli --config {config} run --data-dir {data} --source pattern"
    run += f" --port {free_port()}"
    script = f"mount --bind -o ro {data} {data} && mount -t tmpfs -o size=64k tmpfs {runtime} && exec {run}"
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime)}
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "the memory card is read-only and its data cannot be copied" in result.stderr, result.stderr[
        -3000:
    ]
    pcm, rate = read_wav(said)
    assert np.abs(pcm).max() > 1000 and pcm.size / rate > 2, "nothing was said"


def test_forget_everything_on_a_read_only_card_says_the_card_still_holds_it(tmp_path: Path) -> None:
    """On a read-only card "forget everything" erases the copy in memory only: the unit starts as
    new until the next boot copies the card again. The owner must not hear that all is forgotten."""
    from appliance.state import StateStore

    from .test_privacy import Browser

    data, runtime = tmp_path / "data", tmp_path / "run"
    data.mkdir(mode=0o700)
    runtime.mkdir()
    Identity.load_or_create(data / "identity.key")
    StateStore(data / "state.db").close()
    card = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    settings = '[display]\nbackend = "offscreen"\n[vision]\nenabled = false\n'
    port, proc, log = _run_on_read_only_card(tmp_path, data, runtime, settings)
    try:
        _wait_ready(port, proc)
        owner = Browser(port, runtime / "card-copy")  # the display's text is written to the copy
        owner.log_in()
        csrf = re.search(r'name="csrf" value="([^"]+)"', owner.request("/settings"))
        assert csrf is not None
        page = owner.request("/forget", form={"csrf": csrf.group(1), "confirm": "yes"})
        assert "the card still holds everything" in " ".join(page.split()), page  # the helper reads it too
        _wait_said(log, "This unit starts as new for now", 90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    said = log.read_text()
    assert "saying: Everything is forgotten." not in said
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == card  # it all comes back


def _wait_said(log: Path, sentence: str, timeout: float) -> None:
    """Until the unit's log (``-v``) shows ``sentence`` being said."""
    deadline = time.monotonic() + timeout
    while f"saying: {sentence}" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_data_folder_the_unit_cannot_use_is_said_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that cannot be made was a traceback (no sentence); under systemd, a folder outside
    the service's StateDirectory reads as read-only and passed for a dying memory card (the unit ran
    from a copy in memory, lost everything at each reboot and asked for a new card)."""
    from appliance.app import Appliance
    from appliance.state import StateError
    from tests.conftest import appliance_config

    (tmp_path / "afile").write_text("")
    with pytest.raises(StateError, match="cannot create the data folder"):
        Appliance(appliance_config(tmp_path / "afile" / "data", "Asha")).start()
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    with pytest.raises(StateError, match=r"\[unit\] data_dir .* is outside"):
        Appliance(appliance_config(tmp_path / "srv", "Asha")).start()
    Appliance(appliance_config(tmp_path / "state", "Asha")).start().close()  # inside: it starts
    # The image's root under the state partition's mount point, the partition not mounted over it:
    # the unit would start there as a new one, its key unknown to its paired units.
    monkeypatch.delenv("STATE_DIRECTORY")
    (tmp_path / "root-under").mkdir()
    (tmp_path / "root-under" / ".state-partition-not-mounted").touch()
    with pytest.raises(StateError, match="state partition is not mounted"):
        Appliance(appliance_config(tmp_path / "root-under", "Asha")).start()
    assert not (tmp_path / "root-under" / "identity.key").exists()


def test_a_stop_during_forget_everything_erases_and_starts_nothing_again(tmp_path: Path) -> None:
    """SIGTERM (systemctl stop, a reboot) while the unit forgot everything waited for a whole new
    unit to start (17.6 s here; on a Pi with switched-off paired units and a Coral probe, past
    systemd's 90 s, and the next boot said the unit had stopped working)."""
    import threading

    from appliance.app import Appliance
    from tests.conftest import appliance_config
    from tests.pairing_units import make_unit

    data = tmp_path / "asha"
    unit = Appliance(appliance_config(data, "Asha")).start()
    bela = make_unit(tmp_path, "Bela")  # paired: told even by a unit that stops meanwhile
    assert unit.store is not None and unit.web is not None
    unit.store.add_peer(bela.me.unit_id, "Bela", bela.address, bela.me.public_key)
    asha = f"127.0.0.1:{unit.web.port}"
    bela.store.add_peer(unit.identity.unit_id, "Asha", asha, unit.identity.public_key)
    waiting = threading.Thread(target=unit.wait)
    waiting.start()
    try:
        unit.forget_everything()
        time.sleep(0.3)
        started = time.monotonic()
        unit.stop()
        waiting.join(10)
        assert not waiting.is_alive() and time.monotonic() - started < 5
        assert sorted(p.name for p in data.iterdir()) == []  # erased; no new identity made
        assert bela.store.peers() == []
    finally:
        unit.stop()
        waiting.join(10)
        unit.close()
        bela.close()


def test_free_ports_are_never_handed_out_twice() -> None:
    """The kernel gives a port just closed again (4 of 400 binds here): `emocall demo` once started
    both units on one port, and Bela's owner code was asked of Asha."""
    ports = [free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)


def _said_and_shown(tmp_path: Path, data: Path, sentence: str) -> str:
    """`emocall run` on ``data`` until it has said ``sentence`` and shown it on its display; the log
    line that said it. The unit is stopped then, and must stop cleanly."""
    port, screen = free_port(), tmp_path / "display.txt"
    settings = tmp_path / "config.toml"
    settings.write_text(
        f'[camera]\nsource = "pattern"\n[web]\nhost = "127.0.0.1"\nport = {port}\ndiscovery = false\n'
        f'[speech]\noutput = "wav"\nwav_file = "{tmp_path / "said.wav"}"\nrate_wpm = 450\n'
        f'[display]\nbackend = "offscreen"\nsnapshot_file = "{tmp_path / "display.png"}"\n'
        "[button]\nenabled = false\n"
    )
    log = tmp_path / "unit.log"
    with log.open("w") as out:
        run = [*EMOCALL, "-v", "--config", str(settings), "run", "--data-dir", str(data)]
        proc = subprocess.Popen(run, stderr=out, cwd=ROOT)
    try:
        _wait_ready(port, proc)
        _wait_said(log, sentence, 60)
        (line,) = [x for x in log.read_text().splitlines() if f"saying: {sentence}" in x]
        deadline = time.monotonic() + 20
        while not (screen.exists() and sentence in " ".join(screen.read_text().split())):
            assert time.monotonic() < deadline, screen.read_text() if screen.exists() else "nothing shown"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()[-3000:]
    return line
