"""Privacy by design: what the unit analyses, logs, writes, says and forgets.

- after a real call between two `emocall run` units (``emocall demo``), no log line and no file in
  either data directory names the other unit or an expression, and every file is 0600 in a 0700
  directory;
- with no call, the vision worker classifies no frame;
- the production outputs (ALSA, kmsdrm) that fail leave the unit silent and dark, with no file;
- consent is said at connect, and two presses in a call stop sharing, said aloud and sent;
- "forget everything" leaves no pairing, identity or file behind and the unit comes back as new;
- expressions, names and parties reach the log only at DEBUG; the ICE server list stays empty.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import http.cookiejar
import json
import logging
import re
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import config
from appliance.app import Appliance
from appliance.audio.wav import read_wav
from appliance.call.lan import free_port
from appliance.call.microphone import open_input
from appliance.call.session import Session
from appliance.call.signaling import HttpSignalling
from appliance.camera.capture import Capture
from appliance.camera.file import FileSource
from appliance.camera.pattern import PatternSource
from appliance.events import EventBus
from appliance.guests.invites import Invites
from appliance.identity import Identity
from appliance.pairing.client import RELAY_PREFIX, PeerClient, UnitUnreachable
from appliance.privacy import CallGate
from appliance.relay.routing import FallbackSignalling
from appliance.state import Peer, StateStore
from appliance.vision.worker import VisionWorker
from appliance.words.phrases import DEFAULT_LABELS, EMOTION_WORDS

from .call_unit import Unit, host_address
from .conftest import CLIPS, need
from .talking import Talking
from .test_button import HOLD, ButtonUnit
from .test_call import FlowUnit
from .test_speech import rms

ROOT = Path(__file__).resolve().parents[1]
SPEECH_RMS = 300  # an announcement heard in the WAV (silence and call tone stay far below)


def scan_for(data_dir: Path, words: list[str]) -> list[str]:
    """``file: word`` for each word found in a file of ``data_dir``; the state database is scanned
    without its paired-units table, which holds the other unit's name by design (that is pairing)."""
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if path.name.startswith("state.db-"):
            continue  # the database's journal: scanned as part of state.db below
        data = without_peers(path) if path.name == "state.db" else path.read_bytes()
        found += [f"{path.name}: {w}" for w in words if w.encode("utf-8") in data]
    return found


def without_peers(db: Path) -> bytes:
    copy = db.with_name("scan.sqlite")
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    try:
        source.backup(target)
        target.execute("DELETE FROM peers")
        target.commit()
        target.execute("VACUUM")
    finally:
        source.close()
        target.close()
    data = copy.read_bytes()
    copy.unlink()
    return data


def modes(data_dir: Path) -> dict[str, str]:
    out = {".": oct(stat.S_IMODE(data_dir.stat().st_mode))}
    out |= {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in data_dir.iterdir()}
    return out


def test_after_a_call_no_log_or_file_names_the_other_unit_or_an_expression(tmp_path: Path) -> None:
    clip_a, clip_b = need(CLIPS / "WolfgangLanger_Pexels.mp4"), need(CLIPS / "single_face.mp4")
    host_address()  # skips where there is only loopback (aiortc never offers 127.0.0.1)
    base = tmp_path / "demo"
    command = [sys.executable, "-m", "appliance.cli", "demo", "--seconds", "14", "--data-dir", str(base)]
    demo = subprocess.run(
        [*command, "--a-source", str(clip_a), "--b-source", str(clip_b)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    # The call really carried expressions both ways (printed by the demo from DEBUG event lines).
    assert re.search(r"\[Bela\] remote\.emotion: Asha: \w+", demo.stdout), demo.stdout[-3000:]
    assert "[Asha] call.state: connected to Bela" in demo.stdout
    labels = list(DEFAULT_LABELS)
    words = [w for w in EMOTION_WORDS["en"].values()]
    for me, other in (("asha", "Bela"), ("bela", "Asha")):
        data = base / me
        log = (data / "unit.log").read_text()
        assert "unit.ready" in log
        for line in log.splitlines():
            assert other not in line and not any(label in line for label in labels), line
            assert " INFO aioice" not in line, line  # its lines list the other unit's addresses
            assert not any(re.search(rf"\b{w}\b", line) for w in words), line
        assert scan_for(data, [other, *labels]) == []
        text = [p for p in data.iterdir() if p.suffix in (".txt", ".log")]
        assert text and all(not re.search(rf"\b({'|'.join(words)})\b", p.read_text()) for p in text)
        # Everything the unit and the demo wrote is the unit user's alone.
        assert set(modes(data).values()) <= {"0o600", "0o700"}, modes(data)
        assert modes(data)["."] == "0o700"


def test_no_frame_is_classified_unless_a_shared_call_is_connected(tmp_path: Path) -> None:
    clip = need(CLIPS / "single_face.mp4")
    events = EventBus()
    store = StateStore(tmp_path / "state.db", events)
    capture = Capture(lambda: FileSource(clip), events).start()
    cfg = config.load(None, {}, environ={}).vision
    worker = VisionWorker.open(cfg, capture, events, paused=True).start()
    gate = CallGate(events, worker, lambda: store.settings().share_expressions, camera=capture)
    assert worker.pipeline is not None
    try:
        deadline = time.monotonic() + 5
        while not events.recent("camera.ready") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events.recent("camera.ready")  # opened at start: "camera ready" is said then
        time.sleep(3)
        assert worker.pipeline.frames == 0  # a face in view, no call: nothing analysed
        # And the camera closed: nothing captured, and no picture kept for the next call.
        assert capture.paused and capture.latest() is None and capture.wait_newer(-1, 1.5) is None
        store.update_settings({"share_expressions": True})
        time.sleep(1)
        assert worker.pipeline.frames == 0  # sharing on, still no call
        events.publish("call.state", "connected", state="connected", peer="Bela", reason="")
        deadline = time.monotonic() + 10
        while worker.pipeline.frames < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.pipeline.frames >= 5  # in a call that shares: analysed
        assert not capture.paused
        store.update_settings({"share_expressions": False})  # the owner stops sharing mid-call
        time.sleep(0.5)
        stopped = worker.pipeline.frames
        time.sleep(2)
        assert worker.pipeline.frames == stopped
        store.update_settings({"share_expressions": True})
        time.sleep(1)
        events.publish("call.state", "ended", state="ended", peer="Bela", reason="")
        time.sleep(0.5)
        ended = worker.pipeline.frames
        time.sleep(2)
        assert worker.pipeline.frames == ended
        # A guest's call, sharing on: the camera runs (its video goes to the guest), but a guest
        # never receives the owner's expressions, so none is recognised.
        events.publish("call.state", "connected", state="connected", peer="Priya", reason="", guest=True)
        time.sleep(2)
        assert worker.pipeline.frames == ended and not capture.paused
    finally:
        gate.close()
        worker.close()
        capture.close()
        store.close()


def test_a_unit_stopping_outside_a_call_classifies_no_frame() -> None:
    """Every stop (a restart, "forget everything") wakes the paused worker only to end it: the face in
    view then is not analysed on the way out."""
    events = EventBus()
    capture = Capture(lambda: FileSource(need(CLIPS / "single_face.mp4"), loop=True), events).start()
    worker = VisionWorker.open(config.load(None, {}, environ={}).vision, capture, events, paused=True)
    assert worker.pipeline is not None
    worker.start()
    try:
        assert capture.wait_newer(-1, 5) is not None  # a face in view, no call
        time.sleep(0.7)
    finally:
        worker.close()
        capture.close()
    assert worker.pipeline.frames == 0
    assert [e.topic for e in events.recent("vision.")] == ["vision.backend"]


def test_failing_production_outputs_leave_no_wav_or_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    cfg = config.load(
        None,
        {
            "unit": {"data_dir": str(data), "name": "Kitchen"},
            "web": {"port": free_port(), "discovery": False},
            "camera": {"source": "pattern"},
            "vision": {"enabled": False},
            "speech": {"output": "alsa", "device": "emocall-no-such-device", "rate_wpm": 450},
            "display": {"backend": "kmsdrm"},
        },
        environ={},
    )
    unit = Appliance(cfg).start()
    try:
        assert unit.display is None
        assert unit.speech is not None
        unit.speech.announcer.say("Nobody hears this.")
        assert unit.speech.announcer.wait_idle(30)  # dropped: the device cannot play (retried)
        topics = [e.topic for e in unit.events.recent()]
    finally:
        unit.close()
    assert "audio.unavailable" in topics and "display.unavailable" in topics
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith("state.db")) == ["identity.key"]


def test_consent_is_said_at_connect_and_two_presses_stop_sharing(tmp_path: Path) -> None:
    host = host_address()
    asha = ButtonUnit("Asha", tmp_path / "a", host)
    bela = Unit("Bela", tmp_path / "b", free_port(), host)
    try:
        asha.store.add_peer(bela.identity.unit_id, bela.name, bela.address, bela.identity.public_key)
        bela.pair_with(asha)  # type: ignore[arg-type]  # same attributes as a Unit
        bela.start()
        asha.press()
        asha.wait_state("connected")
        asha.announcer.wait_idle(20)
        since = bela.mark()
        asha.press()
        time.sleep(0.15)
        asha.press()  # two quick presses: stop sharing
        bela.wait_for("remote.sharing", 10, since, paused=True)
        assert not asha.store.settings().share_expressions
        said = asha.said()
        asha.press(HOLD + 0.3)
        asha.wait_state("idle")
    finally:
        bela.close()
        asha.close()
    assert said[:3] == ["Calling Bela.", "Connected to Bela.", "Bela hears your expressions."]
    # The first press is not taken as one on its own: it said the expression first, then the switch.
    assert said[3:] == ["Your expressions are no longer shared."]
    audio, rate = read_wav(asha.wav)
    for played in asha.speaker.played[1:3] + asha.speaker.played[-1:]:
        start = round(played.start_s * rate)
        assert rms(audio[start : start + round(played.duration_s * rate)]) > SPEECH_RMS


def test_four_long_presses_in_idle_forget_everything(tmp_path: Path) -> None:
    """On gpiozero's mock pins: the first two holds say the address (a second hold is how a person
    hears it again), the third what is left, the fourth forgets."""
    unit = ButtonUnit("Asha", tmp_path / "a", host_address())
    try:
        for _ in range(3):
            unit.press(HOLD + 0.2)
            time.sleep(0.2)
        said = unit.said()
        assert unit.forgotten == 0
        unit.press(HOLD + 0.2)
        deadline = time.monotonic() + 5
        while not unit.forgotten and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        unit.close()
    address = f"This unit's address is {' dot '.join(unit.host.split('.'))}, port {unit.port}."
    assert said == [address, address, "To forget everything, hold the button down again: 1 more to go."]
    assert unit.forgotten == 1


def test_holds_that_wait_for_each_sentence_still_forget_everything(tmp_path: Path) -> None:
    """All four holds had to fall within the window (15 s), but each of the first two says the
    address (7.5 s in English): a person who listened before holding again never got there. Each
    hold now counts after at most the window of silence since the one before. Here the window is
    shorter than a hold and its sentence, as 15 s is shorter than a listener's four."""
    unit = ButtonUnit("Asha", tmp_path / "a", host_address(), forget_window=1.0)
    try:
        for _ in range(4):
            unit.press(HOLD + 0.2)
            time.sleep(0.3)  # the sentence starts
            assert unit.announcer.wait_idle(20)
            time.sleep(0.5)  # heard to its end, then the next hold
        deadline = time.monotonic() + 5
        while not unit.forgotten and time.monotonic() < deadline:
            time.sleep(0.05)
        said = [s.item.text for s in unit.announcer.spoken]
        # A pause longer than the window after each hold: each starts again, even when the next
        # comes while the unit says something else (a hang-up's hold as "Bela hung up." is said).
        for _ in range(3):
            unit.announcer.say("Bela hung up.")
            time.sleep(0.1)
            unit.press(HOLD + 0.2)
            time.sleep(0.3)
            assert unit.announcer.wait_idle(20)
            time.sleep(1.6)
        again = [s.item.text for s in unit.announcer.spoken][len(said) :]
    finally:
        unit.close()
    assert unit.forgotten == 1 and len(said) == 3, said
    heard = [text for text in again if text != "Bela hung up."]
    assert len(heard) == 3 and all(text.startswith("This unit's address") for text in heard), again


class Browser:
    """The owner's browser on a running unit: cookies, CSRF token, the code read off the display."""

    def __init__(self, port: int, data: Path) -> None:
        self.base, self.data = f"http://127.0.0.1:{port}", data
        self.http = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def request(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        csrf: str = "",
    ) -> Any:
        headers = {"X-CSRF-Token": csrf} if csrf else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
        with self.http.open(
            urllib.request.Request(self.base + path, data=data, headers=headers), timeout=20
        ) as r:
            raw = r.read().decode()
        return json.loads(raw) if r.headers.get_content_type() == "application/json" else raw

    def log_in(self) -> None:
        csrf = self.request("/api/owner")["csrf"]
        self.request("/api/owner/code", body={}, csrf=csrf)
        code = wait_for_code(self.data / "display.txt")
        self.request("/api/owner/login", body={"code": code}, csrf=csrf)


def wait_for_code(screen: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"\b(\d{6})\b", screen.read_text() if screen.exists() else "")
        if match:
            return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no code on the display: {screen.read_text() if screen.exists() else 'nothing'}")


@pytest.fixture
def unit_data(tmp_path: Path) -> Path:
    """A unit's data directory holding a pairing, an answered sharing question, a log, a snapshot and
    a recording: what "forget everything" must erase."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    other = Identity.load_or_create(tmp_path / "bela.key")
    store = StateStore(data / "state.db")
    store.add_peer(other.unit_id, "Bela", f"127.0.0.1:{free_port()}", other.public_key)  # nobody there
    store.update_settings({"share_expressions": True, "volume": 30})
    store.close()
    for name in ("unit.log", "display-in-call.png", "speaker-old.wav", "wifi-request"):
        (data / name).write_bytes(b"Bela sadness")
    return data


@pytest.fixture
def running_unit(tmp_path: Path, unit_data: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """``emocall run`` on ``unit_data``, with the file outputs chosen (as tests and the demo do)."""
    port = free_port()
    env = {
        "EMOCALL_WEB__DISCOVERY": "false",
        "EMOCALL_SPEECH__OUTPUT": "wav",
        "EMOCALL_SPEECH__RATE_WPM": "450",  # what it says, sooner
        "EMOCALL_DISPLAY__BACKEND": "offscreen",
        "EMOCALL_VISION__ENABLED": "false",
        "EMOCALL_BUTTON__ENABLED": "false",
        "PATH": "/usr/bin:/bin",
    }
    command = [
        sys.executable,
        "-m",
        "appliance.cli",
        "run",
        "--data-dir",
        str(unit_data),
        "--port",
        str(port),
    ]
    with (tmp_path / "unit-output.log").open("w") as log:  # outside the data directory
        proc = subprocess.Popen(
            [*command, "--source", "pattern", "--name", "Kitchen"], env=env, cwd=ROOT, stderr=log, text=True
        )
    try:
        yield proc, port, unit_data
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_ready(port: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                status: dict[str, Any] = json.load(r)
                return status
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the unit on port {port} did not answer")


def came_back(data: Path, old_key: bytes, old_wav: int) -> bool:
    """A new identity and a new speaker recording: the unit has started again."""
    key, wav = data / "identity.key", data / "speaker.wav"
    return key.exists() and key.read_bytes() != old_key and wav.exists() and wav.stat().st_ino != old_wav


def test_forget_everything_leaves_nothing_behind_and_the_unit_comes_back_new(
    tmp_path: Path, running_unit: tuple[subprocess.Popen[str], int, Path]
) -> None:
    proc, port, data = running_unit
    wait_ready(port)
    old_key = (data / "identity.key").read_bytes()
    old_wav = (data / "speaker.wav").stat().st_ino

    owner = Browser(port, data)
    owner.log_in()
    page = owner.request("/settings")
    assert "Forget everything" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    # Not ticked: the browser's own bubble (required) or a page with no way back; now the settings
    # page, its first words the refusal, and nothing erased.
    refused = owner.request("/forget", form={"csrf": csrf.group(1)})
    assert "<title>Error: Nothing was erased" in refused and "<h1>Settings</h1>" in refused
    assert re.search(r'role="alert"[^>]*tabindex="-1" autofocus', refused)  # the message takes the focus
    assert (data / "identity.key").read_bytes() == old_key
    said = owner.request("/forget", form={"csrf": csrf.group(1), "confirm": "yes"})
    assert "starts again as new" in said
    # What is said first, and focused: the login ends with what it opened (no "Your login lasts").
    assert "<title>Everything this unit stored is being erased. You are logged out." in said
    assert "Your login lasts" not in said and "Log out" not in said
    # The form sent again (a double press, a reload): "being erased" still, where it said "Your
    # login has ended, so nothing was changed", and the owner would have logged in to erase again.
    again = owner.request("/forget", form={"csrf": csrf.group(1), "confirm": "yes"})
    assert "<title>Everything this unit stored is being erased. You are logged out." in again

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not came_back(data, old_key, old_wav):
        time.sleep(0.3)
    status = wait_ready(port)
    assert proc.poll() is None  # the same process, started again fresh
    assert (data / "identity.key").read_bytes() != old_key
    planted = ("unit.log", "display-in-call.png", "speaker-old.wav", "wifi-request")
    assert not any((data / n).exists() for n in planted)
    again = StateStore(data / "state.db")
    try:
        assert again.peers() == [] and not again.sharing_answered()
        assert again.settings().volume == 80 and not again.settings().share_expressions
    finally:
        again.close()
    assert status["name"] == "Kitchen"
    assert scan_for(data, ["Bela", "sadness"]) == []


@pytest.fixture
def forget_cut_short(unit_data: Path) -> Path:
    """The owner confirmed "forget everything", then the power went (or the watchdog struck)."""
    (unit_data / "forget-pending").touch()
    return unit_data


def test_a_forget_cut_short_is_finished_at_the_next_start(
    forget_cut_short: Path, running_unit: tuple[subprocess.Popen[str], int, Path]
) -> None:
    _, port, data = running_unit
    assert wait_ready(port)["name"] == "Kitchen"
    planted = ("unit.log", "display-in-call.png", "speaker-old.wav", "wifi-request", "forget-pending")
    assert not any((data / n).exists() for n in planted)
    again = StateStore(data / "state.db")
    try:
        assert again.peers() == [] and not again.sharing_answered()
        assert again.settings().volume == 80
    finally:
        again.close()
    assert scan_for(data, ["Bela", "sadness"]) == []


def test_private_events_reach_the_log_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    events = EventBus()
    private = [
        ("vision.emotion", "expression: sadness (87%)"),
        ("remote.emotion", "Bela: sadness"),
        ("call.state", "connected to Bela"),
        ("pairing.done", "Paired with Bela"),
    ]
    with caplog.at_level(logging.INFO, logger="appliance.events"):
        for topic, message in private:
            events.publish(topic, message, state="connected", peer="Bela")
        events.publish("camera.lost", "camera lost: unplugged")
    infos = [r.getMessage() for r in caplog.records]
    assert infos == ["call.state: connected", "camera.lost: camera lost: unplugged"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="appliance.events"):
        events.publish("remote.emotion", "Bela: sadness", peer="Bela")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "remote.emotion: Bela: sadness")
    ]


def test_the_ice_server_list_stays_empty_so_nothing_asks_a_public_stun_server() -> None:
    assert config.load(None, {}, environ={}).call.ice_servers == ""  # the default
    cfg = config.load(None, {"call": {"audio_in": "none"}}, environ={}).call

    async def offer() -> list[Any]:
        session = Session(
            cfg,
            Capture(lambda: PatternSource(64, 48, 5), EventBus()),
            open_input(cfg),
            speaker=None,  # type: ignore[arg-type]
            on_frame=lambda image: None,
            listener=None,  # type: ignore[arg-type]
        )
        try:
            await session.offer()
            assert session.pc._RTCPeerConnection__configuration.iceServers == []  # type: ignore[attr-defined]
            transports = session.pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
            return [t.iceGatherer._connection for t in transports]
        finally:
            await session.close()

    connections = asyncio.run(offer())
    assert connections and all(c.stun_server is None and c.turn_server is None for c in connections)


def test_consent_follows_sharing_and_whether_expressions_can_be_recognised(tmp_path: Path) -> None:
    """At connect: shared only when the owner shares and vision runs; switching mid-call is said."""
    unit = Talking(tmp_path / "out.wav", "quiet", sharing=True)
    events, announcer = unit.events, unit.announcer

    def call(*states: str) -> None:
        for state in states:
            events.publish("call.state", state, state=state, peer="Bela", reason="")

    try:
        call("connected", "reconnecting", "connected")  # said once per call, not after a reconnect
        events.publish(
            "settings.changed", "saved", changed=["share_expressions"], settings={"share_expressions": False}
        )
        call("ended", "idle")
        events.publish(
            "settings.changed", "saved", changed=["share_expressions"], settings={"share_expressions": True}
        )  # out of a call: the page says it, the unit stays quiet
        events.publish("vision.unavailable", "off", reason="turned off (vision.enabled = false)")
        call("connected")
        assert announcer.wait_idle(20)
        said = [s.item.text for s in announcer.spoken]
    finally:
        unit.close()
    assert said == [
        "Connected to Bela.",
        "Bela hears your expressions.",
        "Reconnecting.",
        "Connected to Bela.",
        "Your expressions are no longer shared.",
        "Call ended.",
        "Connected to Bela.",
        "Your expressions are not shared.",  # sharing on, but no expressions to share
    ]


# What goes through the relay and into the log about the other person --------------------------------

RELAY_ACCOUNT = "priya-0a1b2c3d4e@relay.example.org"


@pytest.fixture
def failed_call(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[FlowUnit, list[bytes]]]:
    """Ravi's unit calls Grandma Priya, paired at home (a LAN address where nothing answers now)
    and tried through the relay next, where she does not answer either: the unit and the bodies
    it handed the relay, the log captured at DEBUG."""
    unit = FlowUnit(tmp_path)
    unit.store.update_settings({"display_name": "Grandpa Ravi"})
    lan = f"127.0.0.1:{free_port()}"  # nothing listens there
    priya = unit.store.add_peer("d" * 32, "Grandma Priya", lan, bytes(32))
    relayed: list[bytes] = []

    def relay(jid: str, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        relayed.append(body)
        raise UnitUnreachable(f"no answer from {jid} through the relay")

    client = PeerClient(unit.me, 1.0, relay=relay)

    def dial(peer: Peer, timeout: float) -> FallbackSignalling:
        ways = [lan, RELAY_PREFIX + RELAY_ACCOUNT]  # as Relay.dialer routes a unit on this network
        return FallbackSignalling(
            [HttpSignalling(dataclasses.replace(peer, address=a), unit.me, timeout, client) for a in ways]
        )

    unit.engine.dial = dial
    try:
        with caplog.at_level(logging.DEBUG):
            unit.engine.call(priya.unit_id)
            unit.wait(lambda: "failed" in unit.states() and unit.engine.state == "idle")
        yield unit, relayed
    finally:
        unit.close()


def test_a_failed_call_names_neither_the_person_nor_where_their_unit_is_at_info(
    failed_call: tuple[FlowUnit, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """INFO said "cannot reach Grandma Priya: ...; trying the next way", and the call's failure
    with her relay account in it (only her name was replaced): both fixed text now, why at DEBUG."""
    records = caplog.get_records("setup")  # the call is made by the fixture
    infos = [r.getMessage() for r in records if r.levelno >= logging.INFO]
    assert "the other unit is not found on this network; trying the relay" in infos
    assert "the call failed" in infos
    private = ("Priya", RELAY_ACCOUNT, "127.0.0.1:")
    assert [line for line in infos if any(word in line for word in private)] == []
    debugs = [r.getMessage() for r in records if r.levelno == logging.DEBUG]
    assert any("cannot reach Grandma Priya" in line for line in debugs)  # why, for whoever debugs


def test_a_units_signals_through_the_relay_do_not_carry_its_display_name(
    failed_call: tuple[FlowUnit, list[bytes]],
) -> None:
    """Every signal carried the sender's display name through the relay, and nothing read it."""
    unit, relayed = failed_call
    assert relayed and all(b"Ravi" not in body for body in relayed)
    assert json.loads(relayed[0])["kind"] == "offer"
    reply = unit.offer(unit.bela)  # the answer, as the signalling endpoint sends it back
    assert reply.kind == "answer" and "Ravi" not in json.dumps(reply.model_dump())


def test_a_guests_page_does_not_send_the_guests_name_in_its_offer(tmp_path: Path) -> None:
    """The page put the guest's name in its offer too, beside the signed invite that names them."""
    from . import test_guest_page as guest_page  # skipped without Playwright

    if not guest_page.CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    store = StateStore(tmp_path / "state.db", EventBus(), {"display_name": "Asha"})
    invites = Invites(Identity.load_or_create(tmp_path / "identity.key"), store)
    token = invites.token(invites.create("Priya", 3600, once=True), guest_page.JID)
    store.close()
    relay = guest_page.Relay(409, {"kind": "busy"})
    with guest_page.sync_api.sync_playwright() as pw:
        browser, page = guest_page._guest_page(pw, relay, token)
        try:
            page.get_by_role("button", name="Call Asha").click()
            guest_page.sync_api.expect(page.get_by_text("Asha is in another call")).to_be_visible()
        finally:
            browser.close()
    [request] = relay.requests
    exchange = json.loads(html.unescape(re.search(r"<request[^>]*>(.*)</request>", request, re.S)[1]))
    signal = json.loads(base64.b64decode(exchange["body"]))["signal"]
    assert signal["kind"] == "offer" and signal.get("name", "") == "" and "Priya" not in json.dumps(signal)


def _settings_form(page: str) -> dict[str, str]:
    """The settings form as a browser sends it unchanged: hidden fields, values, checked boxes and
    radios, selected options."""
    page = page[page.index('action="/settings"') :].split("</form>", maxsplit=1)[0]
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    form.update(re.findall(r'<input id="\w+" name="(\w+)"[^>]*? value="([^"]*)"', page))
    form.update(re.findall(r'<input type="radio" id="[\w-]+" name="(\w+)" value="(\w+)" checked>', page))
    form.update(
        (n, "on")
        for n in re.findall(r'<input type="checkbox" id="\w+" name="(\w+)" value="on" checked>', page)
    )
    chosen = re.search(r'name="voice_language".*?<option value="([\w-]+)"[^>]*selected>', page, re.DOTALL)
    assert chosen is not None
    form["voice_language"] = chosen.group(1)
    return form


def test_saving_other_settings_is_no_answer_to_the_sharing_question(units: tuple[Unit, Unit]) -> None:
    """The settings form always sends the sharing box; left as it was, it does not answer the question,
    which stays on the page (and in the start-up sentence) until the owner answers it."""
    a, _ = units
    browser, _ = a.owner()
    form = _settings_form(browser.get("/settings").get_data(as_text=True))
    assert {"csrf", "display_name", "volume", "announcements"} <= form.keys()
    assert browser.post("/settings", data={**form, "volume": "55"}).status_code == 302
    assert a.store.settings().volume == 55 and not a.store.settings().share_expressions
    assert not a.store.sharing_answered()
    assert "Share your facial expressions with the people you call?" in browser.get("/settings").get_data(
        as_text=True
    )
    form = _settings_form(browser.get("/settings").get_data(as_text=True))
    assert browser.post("/settings", data={**form, "share_expressions": "on"}).status_code == 302
    assert a.store.settings().share_expressions and a.store.sharing_answered()


def test_a_settings_page_left_open_does_not_put_back_what_the_button_changed(
    units: tuple[Unit, Unit],
) -> None:
    """Sharing turned off with the button in a call; a settings page opened before, saved after, for
    the volume: it would have turned sharing on again. Nothing is saved, and the page says why."""
    a, _ = units
    a.store.update_settings({"share_expressions": True})
    browser, _ = a.owner()
    stale = _settings_form(browser.get("/settings").get_data(as_text=True))
    a.store.update_settings({"share_expressions": False})  # the button, in a call
    page = browser.post("/settings", data={**stale, "volume": "55"})
    assert page.status_code == 422 and "changed elsewhere" in page.get_data(as_text=True)
    assert not a.store.settings().share_expressions and a.store.settings().volume == 80
    fresh = _settings_form(page.get_data(as_text=True))
    assert "share_expressions" not in fresh  # the page now shows sharing as it is: off
    assert browser.post("/settings", data={**fresh, "volume": "55"}).status_code == 302
    assert not a.store.settings().share_expressions and a.store.settings().volume == 55


def test_a_settings_form_kept_over_a_login_keeps_the_settings_it_was_filled_from(
    units: tuple[Unit, Unit],
) -> None:
    """A form sent after the login ended is shown again after the next login; it was shown with the
    settings of that moment, so saving it put back what the button had changed meanwhile."""
    a, _ = units
    a.store.update_settings({"share_expressions": True})
    browser, _ = a.owner()
    stale = _settings_form(browser.get("/settings").get_data(as_text=True))
    a.store.update_settings({"share_expressions": False})  # the button, in a call
    a.store.close_all_sessions()  # the login ends (its hours are up)
    assert browser.post("/settings", data={**stale, "volume": "55"}).status_code == 401  # kept
    login = browser.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', login)
    assert csrf is not None
    browser.post("/login/code", data={"csrf": csrf.group(1)})
    assert browser.post("/login", data={"csrf": csrf.group(1), "code": a.code("owner")}).status_code == 302
    kept = _settings_form(browser.get("/settings").get_data(as_text=True))
    assert kept["volume"] == "55" and kept["version"] == stale["version"]
    # Reloaded (or the phone reloading the tab) before Save: the changes were gone, promised kept.
    assert _settings_form(browser.get("/settings").get_data(as_text=True)) == kept
    page = browser.post("/settings", data=kept)
    assert page.status_code == 422 and "changed elsewhere" in page.get_data(as_text=True)
    assert not a.store.settings().share_expressions and a.store.settings().volume == 80
    # Sent, the form is no longer kept: the page shows the settings as they are.
    assert _settings_form(browser.get("/settings").get_data(as_text=True))["volume"] == "80"


def test_the_settings_form_sent_twice_is_saved_once_and_said_saved(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, _ = a.owner()
    form = {**_settings_form(browser.get("/settings").get_data(as_text=True)), "volume": "55"}
    assert browser.post("/settings", data=form).status_code == 302
    assert browser.post("/settings", data=form).status_code == 302  # the second press of Save
    assert "Settings saved." in browser.get("/settings").get_data(as_text=True)
    assert a.store.settings().volume == 55
