"""The call engine in one process: two (or three) engines joined by the in-memory signalling pair,
the data channel's parser, the signalling endpoint under fuzzing, faults and leaks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.exceptions import InvalidStateError
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from appliance import config, identity, platform
from appliance.audio.wav import WavSpeaker
from appliance.call import NOT_ANSWERED, NOT_KNOWN, UNAVAILABLE, UNREACHABLE, CallError, messages
from appliance.call import calls as calls_module
from appliance.call import engine as engine_module
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine
from appliance.call.lan import free_port
from appliance.call.media import SilentInput
from appliance.call.microphone import MicrophoneWatch, open_input
from appliance.call.session import CLOSE_WAIT_SECONDS
from appliance.call.signaling import SIGNAL_PATH, MemoryLink, Signal, SignallingError
from appliance.camera import CameraError, Frame
from appliance.camera.capture import Capture
from appliance.camera.pattern import PatternSource
from appliance.events import Event, EventBus
from appliance.guests.calls import sends_video
from appliance.guests.invites import Invite, Invites
from appliance.guests.service import Guests
from appliance.guests.vision import GuestVision
from appliance.identity import Identity
from appliance.relay import GUEST_CALL_PATH, GUEST_PATH
from appliance.speech.announcer import Announcer
from appliance.speech.espeak import Espeak
from appliance.speech.narrator import Narrator
from appliance.state import Peer, StateStore
from appliance.web.api import create_app
from appliance.web.parts import build_parts
from appliance.web.peer_api import RELAY_SENDER
from appliance.words.phrases import Phrases

from .call_unit import host_address, write_tone


class FailingCamera:
    """A real frame source whose device dies after ``frames`` frames (a camera unplugged mid-call)."""

    name = "flaky"

    def __init__(self, frames: int) -> None:
        self._pattern = PatternSource(640, 480, 15, text="camera")
        self._left = frames

    def read(self) -> Frame:
        self._left -= 1
        if self._left < 0:
            raise CameraError("the camera stopped answering")
        return self._pattern.read()

    def close(self) -> None:
        pass


class Node:
    """One unit's call stack in this process: store, identity, capture, speaker, engine."""

    def __init__(
        self, name: str, root: Path, opener: Callable[[], object] | None = None, **call: object
    ) -> None:
        cfg = config.load(
            None, {"call": {"audio_in": "none", **call}, "web": {"discovery": False}}, environ={}
        )
        self.name, self.cfg = name, cfg
        self.events = EventBus()
        self.seen: list[Event] = []
        self.events.subscribe(self.seen.append)
        self.store = StateStore(
            root / name / "state.db",
            self.events,
            {"display_name": name, "auto_answer": True, "share_expressions": True},
        )
        self.me = Identity.load_or_create(root / name / "identity.key")
        self.capture = Capture(
            opener or (lambda: PatternSource(640, 480, 15, text=name)), self.events, retry_seconds=60
        ).start()  # type: ignore[arg-type, return-value]
        self.speaker = WavSpeaker(root / name / "speaker.wav")
        self.frames = 0
        self.engine = CallEngine(
            cfg.call,
            self.me,
            peers=self.store.peers,
            settings=self.store.settings,
            capture=self.capture,
            events=self.events,
            speaker=self.speaker,
            on_remote_frame=self._frame,
            renamed=self.store.rename_peer,
        ).start()

    def _frame(self, image: np.ndarray) -> None:
        assert image.shape == (480, 640, 3)
        self.frames += 1

    def link(self, other: Node) -> None:
        """Pair both ways and let this node's calls reach the other through the in-memory pair."""
        self.store.add_peer(other.me.unit_id, other.name, f"{host_address()}:1", other.me.public_key)
        other.store.add_peer(self.me.unit_id, self.name, f"{host_address()}:2", self.me.public_key)
        self.engine.dial = MemoryLink(self.me.unit_id, other.engine.incoming)

    def states(self) -> list[str]:
        return [e.data["state"] for e in self.seen if e.topic == "call.state"]

    def wait(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{self.name}: timed out; states {self.states()}"
            time.sleep(0.05)

    def close(self) -> None:
        self.engine.close()
        self.capture.close()
        self.speaker.close()
        self.store.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    host_address()  # skips without a non-loopback interface
    made: list[Node] = []

    def make(name: str, **kwargs: object) -> Node:
        made.append(Node(name, tmp_path, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for node in made:
        node.close()


def held_until(
    go: threading.Event, incoming: Callable[[str, Signal, float | None], concurrent.futures.Future[Signal]]
) -> Callable[[str, Signal, float | None], concurrent.futures.Future[Signal]]:
    """``incoming`` with each message held until ``go`` is set (a link slower than the other)."""

    def deliver(unit_id: str, signal: Signal, sent: float | None) -> concurrent.futures.Future[Signal]:
        reply: concurrent.futures.Future[Signal] = concurrent.futures.Future()

        def later() -> None:
            go.wait(10)
            try:
                reply.set_result(incoming(unit_id, signal, sent).result(30))
            except Exception as e:  # the reply's own failure, for the caller to see
                reply.set_exception(e)

        threading.Thread(target=later, daemon=True).start()
        return reply

    return deliver


def connect(a: Node, b: Node) -> None:
    a.engine.call(b.name)
    a.wait(lambda: a.engine.state == "connected")
    b.wait(lambda: b.engine.state == "connected")


def test_the_same_word_on_sharing_sent_again_is_said_once(nodes: Callable[..., Node]) -> None:
    """Each Sharing message on the channel was one sentence for the owner: sent again (at a
    reconnect, by a faulty unit, 500 of them) they queued up before "Call ended."."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    session = a.engine.flow.session
    assert session is not None
    paused = messages.encode(messages.Sharing(paused=True))
    for _ in range(50):
        a.engine._loop.call_soon_threadsafe(session.channel.send, paused)
    a.events.publish("vision.emotion", "happiness", emotion="happiness", confidence=0.8, since=0.0)
    b.wait(lambda: any(e.topic == "remote.emotion" for e in b.seen))  # sent after them: they are in
    assert [e.data["paused"] for e in b.seen if e.topic == "remote.sharing"] == [True]


def test_emotions_arrive_in_order_and_malformed_messages_are_dropped(nodes: Callable[..., Node]) -> None:
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    session = a.engine.flow.session
    assert session is not None
    garbage = [
        "",
        "{",
        "[]",
        '{"type":"emotion"}',
        '{"type":"emotion","seq":-1,"emotion":"joy","confidence":2}',
        '{"type":"nope"}',
        "x" * 5000,
        b"\xff\xfe",
    ]
    for raw in garbage:
        a.engine._loop.call_soon_threadsafe(session.channel.send, raw)
    for emotion in ("happiness", "sadness", "surprise"):
        a.events.publish("vision.emotion", emotion, emotion=emotion, confidence=0.8, since=0.0)
    b.wait(lambda: len([e for e in b.seen if e.topic == "remote.emotion"]) == 3)
    assert [e.data["emotion"] for e in b.seen if e.topic == "remote.emotion"] == [
        "happiness",
        "sadness",
        "surprise",
    ]
    assert b.engine.state == "connected"
    a.wait(lambda: b.frames >= 10 and a.frames >= 10)


def test_sharing_paused_stops_expressions_and_tells_the_other_unit(nodes: Callable[..., Node]) -> None:
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    a.store.update_settings({"share_expressions": False})
    b.wait(lambda: any(e.topic == "remote.sharing" and e.data["paused"] for e in b.seen))
    a.events.publish("vision.emotion", "anger", emotion="anger", confidence=0.9, since=0.0)
    a.store.update_settings({"share_expressions": True})
    b.wait(lambda: any(e.topic == "remote.sharing" and not e.data["paused"] for e in b.seen))
    a.events.publish("vision.emotion", "fear", emotion="fear", confidence=0.9, since=0.0)
    b.wait(lambda: any(e.topic == "remote.emotion" for e in b.seen))
    assert [e.data["emotion"] for e in b.seen if e.topic == "remote.emotion"] == ["fear"]


def test_a_third_unit_gets_busy_and_is_said_after_the_call(nodes: Callable[..., Node], ears: Any) -> None:
    """Chen is told Bela is busy; Bela's owner hears that Chen tried once the call is over (they
    never learnt of it), once, however often Chen tried."""
    a, b, c = nodes("Asha"), nodes("Bela"), nodes("Chen")
    a.link(b)
    c.link(b)
    bela = ears(b.events, b.speaker)
    connect(a, b)
    for _ in range(2):
        c.engine.call("Bela")
        c.wait(lambda: c.states()[-2:] == ["busy", "idle"])
        c.seen.clear()
    assert b.engine.state == "connected"
    assert "While you were busy, Chen tried to call." not in said(bela)  # not over the call
    a.engine.hangup()
    b.wait(lambda: "While you were busy, Chen tried to call." in said(bela))
    assert said(bela).count("While you were busy, Chen tried to call.") == 1


def test_once_forgetting_everything_has_begun_no_call_rings(nodes: Callable[..., Node]) -> None:
    """A call rang while "forget everything" ran, where every press only said "Forgetting
    everything", until the unpairing hung it up: the ring is declined, and a later call is busy."""
    a, b = nodes("Asha"), nodes("Bela")
    b.store.update_settings({"auto_answer": False})
    a.link(b)
    a.engine.call("Bela")
    b.wait(lambda: b.engine.state == "ringing")
    b.events.publish("unit.forgetting", "forgetting everything this unit stored")
    a.wait(call_over(a))
    b.wait(call_over(b))
    rang = b.states().count("ringing")
    a.engine.call("Bela")
    a.wait(lambda: a.states()[-2:] == ["busy", "idle"])
    assert b.states().count("ringing") == rang == 1
    assert not b.events.recent("call.tried")  # nobody to tell: the unit is being forgotten


def test_unpairing_the_unit_in_the_call_ends_the_call(nodes: Callable[..., Node]) -> None:
    """Bela's owner unpairs Asha mid-call: a unit no longer trusted is not kept on the line (as a
    guest's call ends when its invite is withdrawn). Both sides end the call, and no more of Asha's
    video reaches Bela."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    pairing = build_parts(b.cfg.web, b.me, b.store, b.events, call=b.engine).pairing
    pairing.unpair(a.me.unit_id)  # Asha's unit is not told: its address here answers nothing
    b.wait(lambda: b.engine.state == "idle", timeout=5)
    a.wait(lambda: a.engine.state == "idle", timeout=5)
    assert b.states()[-2:] == ["ended", "idle"]
    assert b.engine.status()["sessions_open"] == 0
    frames = b.frames
    time.sleep(1.0)
    assert b.frames == frames


def test_two_units_calling_each_other_at_once_end_up_in_one_call(nodes: Callable[..., Node]) -> None:
    """Both owners press call at once (after a lost call, say): one call, connected both ways, no
    ring and no "busy" on either side (each answered the other busy)."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    b.engine.dial = MemoryLink(b.me.unit_id, a.engine.incoming)
    bela_calling = threading.Event()
    # The calls cross: Asha's offer reaches Bela once Bela is calling (sent at once, it could
    # arrive first on a loaded machine, and Bela's call was then an answer to a ringing call).
    a.engine.dial = MemoryLink(a.me.unit_id, held_until(bela_calling, b.engine.incoming))
    for node in (a, b):
        node.store.update_settings({"auto_answer": False})
    a.engine.call("Bela")
    b.engine.call("Asha")
    bela_calling.set()
    a.wait(lambda: a.engine.state == "connected" and b.engine.state == "connected")
    a.wait(lambda: a.frames >= 10 and b.frames >= 10)
    assert a.states() == b.states() == ["calling", "connected"]
    assert a.engine.status()["sessions_open"] == b.engine.status()["sessions_open"] == 1


def test_calling_the_unit_whose_call_rings_here_answers_it(nodes: Callable[..., Node]) -> None:
    """Bela presses "Call Asha" while Asha's call rings (the ring not heard): the call is taken,
    not refused with "already ringing with Asha; hang up first"."""
    a, b = nodes("Asha"), nodes("Bela")
    b.store.update_settings({"auto_answer": False})
    a.link(b)
    a.engine.call("Bela")
    b.wait(lambda: b.engine.state == "ringing")
    b.engine.call("Asha")
    b.wait(lambda: a.engine.state == "connected" and b.engine.state == "connected")
    assert b.states() == ["ringing", "connected"]


def test_without_auto_answer_it_rings_until_answered(nodes: Callable[..., Node]) -> None:
    a, b = nodes("Asha"), nodes("Bela")
    b.store.update_settings({"auto_answer": False})
    a.link(b)
    a.engine.call("Bela")
    b.wait(lambda: b.engine.state == "ringing")
    time.sleep(0.5)
    assert a.engine.state == "calling"
    b.engine.answer()
    a.wait(lambda: a.engine.state == "connected")
    b.wait(lambda: b.engine.state == "connected")


def test_a_call_not_answered_ends_saying_so(nodes: Callable[..., Node]) -> None:
    """Bela lets the call ring out: Asha's call ends with the reason speech and the display read as
    "Bela did not answer.", not a plain "Call ended."."""
    a, b = nodes("Asha"), nodes("Bela", ring_seconds=1)
    b.store.update_settings({"auto_answer": False})
    a.link(b)
    a.engine.call("Bela")
    a.wait(lambda: a.engine.state == "idle")
    [ended] = [e for e in a.seen if e.topic == "call.state" and e.data["state"] == "ended"]
    assert ended.data["reason"] == NOT_ANSWERED
    assert b.states()[-3:] == ["ringing", "ended", "idle"]


def test_a_connection_slow_to_close_does_not_hold_the_unit_out_of_idle(nodes: Callable[..., Node]) -> None:
    """A TURN allocation's release is retried for about a minute when the network is down, and the
    call's end, its recovery and the next call all waited for it: the unit stayed out of idle."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    session = a.engine.flow.session
    assert session is not None
    closing = session.pc.close

    async def slow_close() -> None:  # as aioice's TURN release with the network down
        await asyncio.sleep(60)
        await closing()

    session.pc.close = slow_close  # type: ignore[method-assign]
    started = time.monotonic()
    a.engine.hangup()
    a.wait(lambda: a.engine.state == "idle", timeout=10)
    assert time.monotonic() - started < CLOSE_WAIT_SECONDS + 3
    b.wait(lambda: b.engine.state == "idle")
    connect(a, b)  # the next call goes ahead


def test_a_hang_up_over_a_channel_gone_quiet_is_heard_as_a_hang_up(nodes: Callable[..., Node]) -> None:
    """The network drops and the owner hangs up on the frozen picture before the heartbeat says the
    call is lost: the bye went only on the dead channel, and Bela heard "Reconnecting." and 30 s
    later "Connection lost." for a call that was hung up."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    for node in (a, b):  # the data channel carries nothing either way from now on
        session = node.engine.flow.session
        assert session is not None
        session.channel.send = lambda data: None  # type: ignore[method-assign]
    time.sleep(1.7)  # a heartbeat and a half unheard; the peer timeout (4 s) is not reached
    a.engine.hangup()
    b.wait(lambda: b.engine.state == "idle", timeout=5)
    [ended] = [e for e in b.seen if e.topic == "call.state" and e.data["state"] == "ended"]
    assert ended.data["reason"] == "remote hang-up"
    assert "reconnecting" not in b.states()


def test_a_unit_renamed_since_the_pairing_is_called_by_its_new_name(nodes: Callable[..., Node]) -> None:
    """Asha's owner renamed the unit "Grandma" after the pairing: Bela heard "Connected to Asha"
    and "Grandma looks happy" in one call, and the pages kept "Asha" for good."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    a.store.update_settings({"display_name": "Grandma"})
    connect(a, b)
    a.events.publish("vision.emotion", "happiness", emotion="happiness", confidence=0.8, since=0.0)
    b.wait(lambda: any(e.topic == "remote.emotion" for e in b.seen))
    b.engine.hangup()
    b.wait(lambda: b.engine.state == "idle")
    ended = [e for e in b.seen if e.topic == "call.state" and e.data["state"] == "ended"]
    assert [e.data["peer"] for e in b.seen if e.topic == "remote.emotion"] == ["Grandma"]
    assert [e.data["peer"] for e in ended] == ["Grandma"]
    assert [p.name for p in b.store.peers()] == ["Grandma"]  # the pages and the next call


def test_a_name_the_rule_refuses_is_not_taken_from_a_hello(flow_unit: Callable[..., FlowUnit]) -> None:
    """The Hello's name replaces the pairing's only when it keeps the unit's own name rule."""
    unit = flow_unit()
    flow = unit.engine.flow
    assert unit.offer(unit.bela, number=1).kind == "answer"
    session = unit.open_session()
    for name in ("\u202ealeB", "\u200d"):
        hello = messages.Hello(name=name, unit=unit.bela.unit_id)
        unit.on_loop(lambda h=hello: flow.on_message(session, h))  # type: ignore[arg-type, misc]
    assert flow.remote_name == "Bela" and [p.name for p in unit.store.peers()] == ["Bela", "Cara"]


def test_camera_lost_mid_call_the_call_goes_on_with_the_pattern(nodes: Callable[..., Node]) -> None:
    """Bela is told that Asha's expressions cannot be described any more, rather than left in silence."""
    a, b = nodes("Asha", opener=lambda: FailingCamera(frames=45)), nodes("Bela")
    a.link(b)
    connect(a, b)
    a.wait(lambda: any(e.topic == "camera.lost" for e in a.seen), timeout=10)
    b.wait(lambda: [e.data["reason"] for e in b.events.recent("remote.sharing")] == [UNAVAILABLE])
    # The vision worker reads the "no camera" pattern and finds no face: that is not sent, or Bela
    # would hear that Asha walked away, not that her camera is broken.
    a.events.publish("vision.no_face", "no face in view", t=1.0)
    shown = b.frames
    b.wait(lambda: b.frames >= shown + 15)
    assert a.engine.state == b.engine.state == "connected"
    assert not b.events.recent("remote.no_face")


def test_nothing_leaks_across_many_calls(nodes: Callable[..., Node]) -> None:
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    connect(a, b)
    a.engine.hangup()
    b.wait(lambda: b.engine.state == "idle")
    baseline = (own_threads(), len(os.listdir("/proc/self/fd")))
    for i in range(CALLS):
        connect(a, b)
        (a if i % 2 else b).engine.hangup()
        a.wait(lambda: a.engine.state == "idle" and b.engine.state == "idle")
    for node in (a, b):
        assert node.engine.status()["sessions_open"] == 0
        tasks = asyncio.run_coroutine_threadsafe(_task_count(), node.engine._loop).result(5)
        assert tasks <= 1, f"{tasks} tasks left on {node.name}'s loop"
    time.sleep(0.5)
    assert own_threads() <= baseline[0] + 2, [t.name for t in threading.enumerate()]
    assert len(os.listdir("/proc/self/fd")) <= baseline[1] + 5


CALLS = 50


def own_threads() -> int:
    """Live threads other than asyncio's executor workers: each loop's default pool starts its
    workers as work comes (up to its max_workers, once seen in CI as three more after 50 calls)
    and keeps them, which is bounded, not a leak."""
    names = [t.name for t in threading.enumerate()]
    workers = sum(name.startswith("asyncio_") for name in names)
    assert workers <= 2 * min(32, (os.cpu_count() or 1) + 4), names  # two units, one loop each
    return len(names) - workers


async def _task_count() -> int:
    return len(asyncio.all_tasks())


@given(
    st.one_of(
        st.text(max_size=2000),
        st.binary(max_size=2000),
        st.dictionaries(
            st.text(max_size=10), st.none() | st.integers() | st.text(max_size=20) | st.floats(), max_size=6
        ).map(lambda d: __import__("json").dumps(d)),
    )
)
@settings(max_examples=300, deadline=None)
def test_the_data_channel_parser_refuses_anything_malformed_with_its_own_error(raw: str | bytes) -> None:
    try:
        message = messages.parse(raw)
    except messages.MessageError:
        return
    assert messages.parse(messages.encode(message)) == message


def test_oversized_messages_are_refused_before_parsing() -> None:
    big = '{"type":"hello","name":"' + "a" * messages.MAX_MESSAGE_BYTES + '","unit":"' + "0" * 32 + '"}'
    with pytest.raises(messages.MessageError, match="refused"):
        messages.parse(big)


@pytest.fixture
def signal_client(tmp_path: Path) -> Iterator[tuple[object, Identity, Node]]:
    node = Node("Bela", tmp_path)
    caller = Identity.load_or_create(tmp_path / "caller.key")
    node.store.add_peer(caller.unit_id, "Asha", "192.0.2.99:8080", caller.public_key)
    parts = build_parts(node.cfg.web, node.me, node.store, node.events, call=node.engine)
    app = create_app(lambda: {}, parts, [create_blueprint(node.engine)])
    try:
        yield app.test_client(), caller, node
    finally:
        node.close()


def _post(client: object, caller: Identity | None, body: bytes, to: str) -> object:
    headers = {"Content-Type": "application/json"}
    if caller is not None:
        headers.update(identity.sign_request(caller, to, "POST", SIGNAL_PATH, body).headers)
    return client.post(SIGNAL_PATH, data=body, headers=headers)  # type: ignore[attr-defined]


SIGNALS = st.one_of(
    st.binary(max_size=3000),
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["offer", "answer", "busy", "declined", "nope", ""]),
            "sdp": st.text(max_size=3000),
        },
        optional={"name": st.text(max_size=60), "extra": st.integers()},
    ).map(lambda d: __import__("json").dumps(d).encode()),
    st.lists(
        st.sampled_from(
            [
                "v=0",
                "o=- 1 1 IN IP4 0.0.0.0",
                "s=-",
                "t=0 0",
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
                "a=rtpmap:96 VP8/90000",
                "c=IN IP4 0.0.0.0",
                "a=fingerprint:sha-256 zz",
                "m=audio x",
                "a=mid:0",
                "a=setup:actpass",
                "a=ice-ufrag:x",
            ]
        ),
        max_size=14,
    ).map(
        lambda lines: __import__("json").dumps({"kind": "offer", "sdp": "\r\n".join(lines) + "\r\n"}).encode()
    ),
)


@given(body=SIGNALS, signed=st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_signalling_endpoint_answers_malformed_requests_with_a_clear_4xx(
    signal_client: tuple[object, Identity, Node], body: bytes, signed: bool
) -> None:
    client, caller, node = signal_client
    response = _post(client, caller if signed else None, body, node.me.unit_id)
    assert response.status_code in ((400, 413) if signed else (403,)), response.get_data()  # type: ignore[attr-defined]
    assert response.get_json()["error"]  # type: ignore[attr-defined]
    assert node.engine.state in ("idle", "failed")
    node.wait(lambda: node.engine.state == "idle", timeout=5)


def test_the_signalling_endpoint_refuses_unpaired_and_replayed_requests(
    signal_client: tuple[object, Identity, Node], tmp_path: Path
) -> None:
    client, caller, node = signal_client
    stranger = Identity.load_or_create(tmp_path / "stranger.key")
    body = b'{"kind": "bye"}'
    assert _post(client, stranger, body, node.me.unit_id).status_code == 403  # type: ignore[attr-defined]
    signed = identity.sign_request(caller, node.me.unit_id, "POST", SIGNAL_PATH, body)
    headers = {"Content-Type": "application/json", **signed.headers}
    first = client.post(SIGNAL_PATH, data=body, headers=headers)  # type: ignore[attr-defined]
    assert first.status_code == 200
    identity.verify_response(node.me.public_key, signed.exchange, 200, dict(first.headers), first.get_data())
    assert client.post(SIGNAL_PATH, data=body, headers=headers).status_code == 403  # type: ignore[attr-defined]
    status = client.get("/api/call", headers={"X-Emocall-Local": "1"})  # type: ignore[attr-defined]
    assert status.get_json()["state"] == "idle"


def test_selftest_names_the_encoder_the_address_and_the_call_audio(tmp_path: Path) -> None:
    from appliance import selftest

    tone = write_tone(tmp_path / "tone.wav", 440)
    cfg = config.load(None, {"call": {"audio_in": "wav", "audio_file": str(tone)}}, environ={})
    report = selftest.check_call(cfg)
    assert report.ok, report
    assert "VP8 640x480 frame encoded" in report.detail
    assert f"address {host_address()}" in report.detail
    assert f"call audio: {tone}" in report.detail
    missing = config.load(None, {"call": {"audio_in": "wav"}}, environ={})
    report = selftest.check_call(missing)
    assert not report.ok
    assert "audio_file" in report.detail


# The state machine's faults, with fake sessions and signalling: a hang-up cut short, a re-offer or a
# microphone failing mid-call, the other unit restarting. Each must leave the unit ready for calls.

OFFER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n"
)
MIC_GONE = "cannot open the microphone: Device unavailable"


def relay_connected() -> dict[str, str]:
    """The relay state the guests page reads: connected."""
    return {"state": "connected"}


class FakeSession:
    """A session that opens when the test says so; its close, once begun, goes on to its end. Its
    answer takes ``answer_seconds`` (ICE gathering) and, like aiortc's, fails once it was closed."""

    def __init__(self, close_seconds: float, answer_error: Exception | None, answer_seconds: float) -> None:
        self.opened = asyncio.Event()
        self.is_open = False
        self.received = None
        self.sent: list[messages.Message] = []
        self._close_seconds, self._answer_error = close_seconds, answer_error
        self._answer_seconds = answer_seconds
        self._closing: asyncio.Task[None] | None = None

    async def offer(self) -> str:
        return OFFER_SDP

    async def accept(self, sdp: str) -> None:
        pass

    async def answer(self, sdp: str) -> str:
        if self._answer_error is not None:
            raise self._answer_error
        await asyncio.sleep(self._answer_seconds)
        if self._closing is not None:
            raise InvalidStateError("RTCPeerConnection is closed")
        return OFFER_SDP

    def send(self, message: messages.Message) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(asyncio.sleep(self._close_seconds))
        await asyncio.shield(self._closing)


class FakeSignalling:
    """The other unit's reply after ``delay`` seconds; no reply at all (still ringing) for None."""

    def __init__(self, reply: Signal | None, delay: float) -> None:
        self._reply, self._delay = reply, delay
        self._replies: asyncio.Queue[Signal] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def send(self, signal: Signal) -> None:
        if self._reply is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self._delay)
        assert self._reply is not None
        await self._replies.put(self._reply)

    async def receive(self) -> Signal:
        return await self._replies.get()

    async def close(self) -> None:
        pass


class FlowUnit(Node):
    """Asha's call stack, auto-answering, paired with Bela and Cara, with fake sessions and signalling.

    ``replies`` are the other units' replies, one per dial, as (signal or None, delay)."""

    def __init__(self, root: Path, **call: object) -> None:
        super().__init__("Asha", root, **call)
        self.bela = self.store.add_peer("b" * 32, "Bela", "192.0.2.2:8080", bytes(32))
        self.cara = self.store.add_peer("c" * 32, "Cara", "192.0.2.3:8080", bytes(32))
        self.replies: list[tuple[Signal | None, float]] = []
        self.dials = 0
        self.close_seconds = 0.0
        self.answer_seconds = 0.0
        self.answer_error: Exception | None = None
        self.session_error: Exception | None = None
        self.engine.dial = self._dial  # type: ignore[assignment]
        self.engine.new_session = self._new_session  # type: ignore[method-assign, assignment]

    def _dial(self, peer: Peer, timeout: float) -> FakeSignalling:
        # Past the test's own replies (a hang-up when the engine closes): the other unit's bye.
        reply, delay = (
            self.replies[self.dials] if self.dials < len(self.replies) else (Signal(kind="bye"), 0.0)
        )
        self.dials += 1
        return FakeSignalling(reply, delay)

    def _new_session(self, peer: Peer) -> FakeSession:
        if self.session_error is not None:
            raise self.session_error
        return FakeSession(self.close_seconds, self.answer_error, self.answer_seconds)

    def on_loop(self, action: Callable[[], object]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self.engine.loop).result(5)

    def offer(
        self, peer: Peer, resume: bool = False, wait: float = 40, sent_ago: float = 0, number: int = 0
    ) -> Signal:
        return self.send_offer(peer, resume, wait, sent_ago, number).result(5)

    def send_offer(
        self, peer: Peer, resume: bool = False, wait: float = 40, sent_ago: float = 0, number: int = 0
    ) -> concurrent.futures.Future[Signal]:
        """``peer``'s offer, the reply still to come (``number``: the caller's count of its offers)."""
        signal = Signal(kind="offer", sdp=OFFER_SDP, name=peer.name, resume=resume, wait=wait, number=number)
        return self.engine.incoming_from(peer, signal, time.time() - sent_ago)

    def bye(self, peer: Peer, number: int = 0) -> Signal:
        """``peer``'s bye, as its unit sends it when the connection is down (``number``: its last
        offer's, when it is the caller)."""
        return self.engine.incoming_from(peer, Signal(kind="bye", number=number), time.time()).result(5)

    def open_session(self) -> FakeSession:
        """The call's session opens (its data channel would): the call is connected."""
        flow = self.engine.flow
        session = flow.session
        assert isinstance(session, FakeSession)
        self.on_loop(lambda: (session.opened.set(), flow.on_open(session)))  # type: ignore[arg-type]
        return session

    def wait_state(self, state: str) -> None:
        self.wait(lambda: self.engine.state == state)


@pytest.fixture
def flow_unit(tmp_path: Path) -> Iterator[Callable[..., FlowUnit]]:
    made: list[FlowUnit] = []

    def make(**call: object) -> FlowUnit:
        made.append(FlowUnit(tmp_path / str(len(made)), **call))
        return made[-1]

    yield make
    for unit in made:
        unit.close()


def test_a_hang_up_slower_than_its_wait_still_ends_the_call(
    flow_unit: Callable[..., FlowUnit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The button's hang-up stops waiting while the session still closes (a TURN allocation being
    deleted): the unit must still go idle, not answer every later call busy."""
    monkeypatch.setattr(engine_module, "HANGUP_WAIT_SECONDS", 0.3)
    unit = flow_unit()
    unit.close_seconds = 1.0
    unit.replies = [(None, 0.0), (Signal(kind="bye"), 0.1)]  # Bela rings; then the bye's reply
    unit.engine.call("Bela")
    unit.engine.hangup()
    unit.wait_state("idle")
    assert unit.states() == ["calling", "ended", "idle"]
    assert unit.offer(unit.cara).kind == "answer"


def test_a_call_placed_while_the_last_one_closes_goes_out_once_idle(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Called back at once (the page's Call, the button) while the ended call's session still
    closes: placed when the unit is idle, not refused."""
    unit = flow_unit()
    unit.close_seconds = 1.0
    unit.replies = [(None, 0.0), (Signal(kind="bye"), 0.0), (None, 0.0)]
    unit.engine.call("Bela")
    asyncio.run_coroutine_threadsafe(unit.engine.flow.hang_up(), unit.engine.loop)
    unit.wait_state("ended")
    unit.engine.call("Cara")
    assert unit.states() == ["calling", "ended", "idle", "calling"]


def test_a_call_coming_in_while_the_last_one_closes_is_answered_not_busy(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Bela calls back at once (the call was lost there) while this unit's session still closes."""
    unit = flow_unit()
    unit.close_seconds = 1.0
    assert unit.offer(unit.bela).kind == "answer"
    unit.open_session()
    asyncio.run_coroutine_threadsafe(unit.engine.flow.hang_up(), unit.engine.loop)
    unit.wait_state("ended")
    assert unit.offer(unit.bela).kind == "answer"
    assert unit.states() == ["ringing", "connected", "ended", "idle", "ringing"]


def test_a_bye_that_comes_before_its_offer_keeps_it_from_ringing(flow_unit: Callable[..., FlowUnit]) -> None:
    """Bela calls back at once and hangs up at once: the offer waits for this unit's last call to
    close, and the bye that comes meanwhile matched no call and was dropped: the offer then rang
    for a caller long gone. Through the relay a bye can overtake its offer outright, the same."""
    unit = flow_unit()
    unit.close_seconds = 1.0
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    asyncio.run_coroutine_threadsafe(unit.engine.flow.hang_up(), unit.engine.loop)
    unit.wait_state("ended")
    pending = unit.send_offer(unit.bela, number=2)
    time.sleep(0.1)
    assert unit.bye(unit.bela, number=2).kind == "bye"
    assert pending.result(5).kind == "declined"
    assert unit.bye(unit.bela, number=3).kind == "bye"  # overtook its offer
    assert unit.offer(unit.bela, number=3).kind == "declined"
    assert unit.states() == ["ringing", "connected", "ended", "idle"]
    assert unit.offer(unit.bela, number=4).kind == "answer"  # the next call rings


def test_a_late_bye_for_an_earlier_call_leaves_the_ringing_one(flow_unit: Callable[..., FlowUnit]) -> None:
    """Bela calls, hangs up and calls again; the first call's bye comes late (through the relay, or
    this unit was stalled) while the second rings: it ended the second, "Missed call from Bela"."""
    unit = flow_unit()
    unit.store.update_settings({"auto_answer": False})
    first = unit.send_offer(unit.bela, number=1)
    unit.wait_state("ringing")
    assert unit.bye(unit.bela, number=1).kind == "bye"
    assert first.result(5).kind == "declined"
    unit.wait_state("idle")
    second = unit.send_offer(unit.bela, number=2)
    unit.wait(lambda: unit.states().count("ringing") == 2)
    assert unit.bye(unit.bela, number=1).kind == "bye"  # the first call's, late
    time.sleep(0.3)
    assert unit.engine.state == "ringing" and not second.done()
    assert unit.bye(unit.bela, number=2).kind == "bye"  # this call's own
    assert second.result(5).kind == "declined"


def test_a_hang_up_while_the_answer_comes_connects_nothing(flow_unit: Callable[..., FlowUnit]) -> None:
    """The owner hangs up while calling and Bela answers in that moment (the hang-up's bye takes
    up to 2 s): "connected to Bela" was said after the hang-up, then "call ended"."""
    unit = flow_unit()
    unit.replies = [(Signal(kind="answer", sdp=OFFER_SDP), 0.2), (Signal(kind="bye"), 1.0)]
    unit.engine.call("Bela")
    unit.wait(lambda: unit.engine.flow.session is not None)
    hang_up = asyncio.run_coroutine_threadsafe(unit.engine.flow.hang_up(), unit.engine.loop)
    unit.wait(lambda: unit.dials == 2)  # the bye is on its way
    time.sleep(0.3)  # the answer would have come by now
    if unit.engine.state == "calling" and unit.engine.flow.session is not None:
        unit.open_session()  # Bela's side opens the connection meanwhile
    hang_up.result(5)
    unit.wait_state("idle")
    assert unit.states() == ["calling", "ended", "idle"]


def test_a_re_offer_while_connected_here_waits_as_long_as_a_loss_seen_here(
    flow_unit: Callable[..., FlowUnit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bela noticed the loss first: her re-offer comes while this unit still reads "connected". Its
    connection not opening within CONNECT_SECONDS ended the call ("could not connect") long before
    reconnect_seconds; now the unit reconnects and takes Bela's next re-offer."""
    monkeypatch.setattr(calls_module, "CONNECT_SECONDS", 0.5)
    unit = flow_unit(reconnect_seconds=30)
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    unit.wait_state("connected")
    assert unit.offer(unit.bela, resume=True, number=2).kind == "answer"
    time.sleep(1.0)  # its connection did not open
    assert unit.offer(unit.bela, resume=True, number=3).kind == "answer"
    unit.open_session()
    unit.wait_state("connected")
    assert unit.states() == ["ringing", "connected", "reconnecting", "connected"]


def test_a_restarted_callee_calling_again_owns_the_recovery(flow_unit: Callable[..., FlowUnit]) -> None:
    """Bela's process restarted and she called again, answered as the same call: this unit stayed
    "the caller", so after a blip both units re-offered, each answer undoing the other's, and the
    call was lost. This unit now waits for Bela's re-offers."""
    unit = flow_unit(reconnect_seconds=3)
    unit.replies = [(Signal(kind="answer", sdp=OFFER_SDP), 0.0)]
    unit.engine.call("Bela")
    unit.wait(lambda: unit.engine.flow.session is not None)
    unit.open_session()
    unit.wait_state("connected")
    assert unit.offer(unit.bela, number=1).kind == "answer"  # restarted: a new call, counting from 1
    session = unit.open_session()
    dials = unit.dials
    unit.on_loop(lambda: unit.engine.flow.on_lost(session, "a blip"))  # type: ignore[arg-type]
    time.sleep(0.5)
    assert unit.dials == dials and unit.engine.state == "reconnecting"
    assert unit.offer(unit.bela, resume=True, number=2).kind == "answer"
    unit.open_session()
    unit.wait_state("connected")


def test_two_units_calling_each_other_at_once_are_connected(flow_unit: Callable[..., FlowUnit]) -> None:
    """Both owners call back at once: each unit answered the other's offer busy ("Bela is busy",
    "Asha is busy"). The unit with the higher id takes the other's call without a ring; the other's
    own call goes on and the crossing offer is then told busy."""
    unit = flow_unit()
    low = unit.store.add_peer("0" * 32, "Dev", "192.0.2.4:8080", bytes(32))  # below Asha's id
    high = unit.store.add_peer("f" * 32, "Eve", "192.0.2.5:8080", bytes(32))  # above it
    unit.replies = [(None, 0.0)]  # Dev's side takes no notice of this unit's offer (see below)
    unit.engine.call("Dev")
    unit.wait(lambda: unit.engine.flow.session is not None)
    assert unit.offer(low, number=1).kind == "answer"  # taken: no ring
    unit.open_session()
    unit.wait_state("connected")
    assert unit.states() == ["calling", "connected"] and not unit.engine.flow.caller
    unit.replies += [(Signal(kind="bye"), 0.0)]  # the hang-up's
    unit.engine.hangup()
    unit.wait_state("idle")
    unit.replies += [(Signal(kind="answer", sdp=OFFER_SDP), 0.5)]  # Eve takes this unit's call
    unit.engine.call("Eve")
    crossing = unit.send_offer(high, number=1)
    time.sleep(0.8)
    assert not crossing.done()  # held until this unit's own call has settled
    unit.open_session()
    assert crossing.result(5).kind == "busy"
    assert unit.states()[-2:] == ["calling", "connected"] and unit.engine.flow.caller


def test_a_crossing_call_rings_once_this_units_own_call_failed(flow_unit: Callable[..., FlowUnit]) -> None:
    """The lower id's own call did not go through (the other unit, of an earlier release, answered
    it busy): the crossing offer is then answered as any call, with a ring."""
    unit = flow_unit()
    high = unit.store.add_peer("f" * 32, "Eve", "192.0.2.5:8080", bytes(32))
    unit.replies = [(Signal(kind="busy"), 0.3)]
    unit.engine.call("Eve")
    assert unit.offer(high, number=1).kind == "answer"  # rang and was answered (auto-answer)
    assert unit.states() == ["calling", "busy", "idle", "ringing"]


def test_a_crossing_offer_does_not_ring_after_this_unit_hung_up_its_own_call(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Asha (the lower id) and Eve call each other at once; Eve takes Asha's call and gives up her
    own; Asha's owner hangs up before it connects. Eve's crossing offer rang at Asha afterwards, for
    a call nobody was making ("Eve is calling")."""
    unit = flow_unit()
    high = unit.store.add_peer("f" * 32, "Eve", "192.0.2.5:8080", bytes(32))
    unit.replies = [(None, 0.0), (Signal(kind="bye"), 0.0)]  # Eve's answer not back yet; the bye's
    unit.engine.call("Eve")
    crossing = unit.send_offer(high, number=1)
    time.sleep(0.3)
    unit.engine.hangup()
    assert crossing.result(5).kind == "declined"
    time.sleep(0.3)
    assert "ringing" not in unit.states()


def test_a_crossing_offer_does_not_ring_after_the_other_unit_took_the_call_and_hung_up(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Eve (the higher id) takes Asha's call and gives up her own; her owner hangs up before it
    connects: Asha heard "Eve hung up", then "Eve is calling" for the offer Eve had given up."""
    unit = flow_unit()
    high = unit.store.add_peer("f" * 32, "Eve", "192.0.2.5:8080", bytes(32))
    unit.replies = [(Signal(kind="answer", sdp=OFFER_SDP), 0.0)]
    unit.engine.call("Eve")
    crossing = unit.send_offer(high, number=1)
    unit.wait(lambda: unit.dials == 1)
    time.sleep(0.3)  # answered: the connection opening
    assert unit.bye(high).kind == "bye"  # Eve hangs up
    assert crossing.result(5).kind == "declined"
    time.sleep(0.3)
    assert "ringing" not in unit.states()


def test_a_re_offer_during_a_slow_hang_up_is_told_bye(flow_unit: Callable[..., FlowUnit]) -> None:
    """Hung up while reconnecting: the bye goes over HTTP and takes seconds through a relay. Bela's
    re-offer meanwhile was answered: Bela said "Connected to Asha" after Asha had hung up."""
    unit = flow_unit(reconnect_seconds=30)
    assert unit.offer(unit.bela, number=1).kind == "answer"
    session = unit.open_session()
    unit.on_loop(lambda: unit.engine.flow.on_lost(session, "a blip"))  # type: ignore[arg-type]
    unit.wait_state("reconnecting")
    unit.replies = [(Signal(kind="bye"), 1.5)]
    hang_up = threading.Thread(target=unit.engine.hangup)
    hang_up.start()
    unit.wait(lambda: unit.dials == 1)  # the bye is on its way
    assert unit.offer(unit.bela, resume=True, number=2).kind == "bye"
    hang_up.join(10)
    unit.wait_state("idle")
    assert unit.states() == ["ringing", "connected", "reconnecting", "ended", "idle"]
    assert unit.engine.flow.sessions_open == 0


def test_a_re_offer_answered_while_still_connected_here_is_not_said_again(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Bela saw the loss first and re-offered while this unit still read "connected": "Connected to
    Bela" (and the sharing sentence) was said a second time in the middle of the call."""
    unit = flow_unit(reconnect_seconds=30)
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    unit.wait_state("connected")
    assert unit.offer(unit.bela, resume=True, number=2).kind == "answer"
    unit.open_session()
    time.sleep(0.2)
    assert unit.states() == ["ringing", "connected"]


def test_a_re_offer_before_the_answered_call_opened_here_is_answered(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Bela's side opened first; this unit stalled before its own side did, and Bela re-offers: the
    call goes on with the re-offer's session, it is not told the call is over ("lost")."""
    unit = flow_unit()
    assert unit.offer(unit.bela).kind == "answer"  # answered by itself; not open here yet
    assert unit.offer(unit.bela, resume=True, number=1).kind == "answer"
    unit.open_session()
    unit.wait_state("connected")
    assert unit.states() == ["ringing", "connected"]


def test_an_offer_queued_past_its_callers_wait_does_not_ring(flow_unit: Callable[..., FlowUnit]) -> None:
    """A unit back from a stall finds an offer signed 5 s ago by a caller that waits 1 s: declined,
    and nothing rings (its wait counts from the stamp, in this unit's clock); within it, answered."""
    unit = flow_unit()
    assert unit.offer(unit.bela, wait=1, sent_ago=5).kind == "declined"
    assert unit.states() == []
    assert unit.offer(unit.bela, wait=1, sent_ago=0.5).kind == "answer"


@pytest.mark.parametrize("step", ["bye", "close"])
def test_a_hang_up_cancelled_midway_still_ends_the_call(
    flow_unit: Callable[..., FlowUnit], step: str
) -> None:
    """Cancelled while telling the other unit (``bye``) or while closing the session (``close``)."""
    unit = flow_unit()
    unit.close_seconds = 1.0
    unit.replies = [(None, 0.0), (Signal(kind="bye"), 1.0)]
    unit.engine.call("Bela")
    hang_up = asyncio.run_coroutine_threadsafe(unit.engine.flow.hang_up(), unit.engine.loop)
    if step == "bye":
        unit.wait(lambda: unit.dials == 2)
    else:
        unit.wait_state("ended")
    hang_up.cancel()
    unit.wait_state("idle")
    assert unit.states() == ["calling", "ended", "idle"]
    assert unit.offer(unit.cara).kind == "answer"


@pytest.mark.parametrize("lost", [False, True])
def test_a_re_offer_that_cannot_be_answered_ends_in_recovery(
    flow_unit: Callable[..., FlowUnit], lost: bool
) -> None:
    """Bela's re-offer replaces the live session but cannot be answered: Asha waits for another as
    after any loss, and gives up at the end of reconnect_seconds."""
    unit = flow_unit(reconnect_seconds=0.5)
    assert unit.offer(unit.bela).kind == "answer"
    session = unit.open_session()
    if lost:
        unit.on_loop(lambda: unit.engine.flow.on_lost(session, "test: nothing heard"))  # type: ignore[arg-type]
    unit.answer_error = ValueError("ICE username fragment or password is missing")
    with pytest.raises(SignallingError):
        unit.offer(unit.bela, resume=True)
    unit.wait_state("idle")
    assert unit.states() == ["ringing", "connected", "reconnecting", "lost", "idle"]
    unit.answer_error = None
    assert unit.offer(unit.cara).kind == "answer"


@pytest.mark.parametrize("ending", ["lost", "bye"])
def test_a_re_offer_for_a_call_over_here_says_whether_it_was_hung_up(
    flow_unit: Callable[..., FlowUnit], ending: str
) -> None:
    """Bela's re-offer comes after Asha's side of the call is over: "bye" only if Asha hung up. If
    Asha stopped waiting for it, "lost": Bela must say the call was lost, not that Asha hung up."""
    unit = flow_unit(reconnect_seconds=0.3)
    assert unit.offer(unit.bela).kind == "answer"
    session = unit.open_session()
    if ending == "bye":
        unit.engine.hangup()
    else:
        unit.on_loop(lambda: unit.engine.flow.on_lost(session, "test: nothing heard"))  # type: ignore[arg-type]
    unit.wait_state("idle")
    assert unit.offer(unit.bela, resume=True).kind == ending
    assert unit.offer(unit.cara, resume=True).kind == "lost"  # Asha hung up on Bela, not on Cara


@pytest.mark.parametrize("ending", ["hang-up", "bye"])
def test_a_call_ending_while_a_re_offer_is_answered_leaves_no_session_open(
    flow_unit: Callable[..., FlowUnit], ending: str
) -> None:
    """Bela re-offers after a blip; answering it, Asha first closes the live session, which takes a
    while (a TURN allocation's close). Meanwhile the call ends: Asha hangs up, or Bela's bye comes.
    The re-offer is not answered with a new session: none is left open sending media to nobody, and
    Bela is told Asha hung up when she did."""
    unit = flow_unit(reconnect_seconds=0.5)
    unit.close_seconds = 1.0
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    reoffer = unit.send_offer(unit.bela, resume=True, number=2)
    time.sleep(0.2)  # the re-offer is closing the live session
    if ending == "hang-up":
        unit.engine.hangup()
    else:
        assert unit.bye(unit.bela).kind == "bye"
    reply = reoffer.result(5).kind
    unit.wait_state("idle")
    assert unit.engine.status()["sessions_open"] == 0
    assert unit.states() == ["ringing", "connected", "ended", "idle"]
    assert reply == "bye" if ending == "hang-up" else reply != "answer"


def test_a_re_offer_failed_by_the_calls_end_leaves_the_unit_ready_for_calls(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Bela's bye ends the call while its re-offer's answer gathers candidates: the call's end closes
    the new session, and aiortc then fails the answer. That failure is not a loss to recover from:
    the unit stays ready for calls, and never says "trying again" for a call that is over."""
    unit = flow_unit(reconnect_seconds=0.5)
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    unit.answer_seconds = 1.0
    reoffer = unit.send_offer(unit.bela, resume=True, number=2)
    time.sleep(0.2)  # the re-offer's answer is under way
    assert unit.bye(unit.bela).kind == "bye"
    concurrent.futures.wait([reoffer], timeout=5)
    time.sleep(1.0)  # past reconnect_seconds
    assert unit.states() == ["ringing", "connected", "ended", "idle"]
    unit.answer_seconds = 0.0
    assert unit.offer(unit.cara).kind == "answer"
    assert reoffer.result(5).kind != "answer"


@pytest.mark.parametrize("hang_up", ["waited", "cancelled"])
def test_a_re_offer_while_the_hang_up_closes_the_session_is_told_bye(
    flow_unit: Callable[..., FlowUnit], hang_up: str
) -> None:
    """Bela's re-offer comes while Asha's hang-up still closes the session, or after a hang-up given
    up on there: Bela is told Asha hung up, not that the call was lost."""
    unit = flow_unit()
    unit.close_seconds = 1.0
    assert unit.offer(unit.bela).kind == "answer"
    unit.open_session()
    ending = asyncio.run_coroutine_threadsafe(unit.engine.flow.hang_up(), unit.engine.loop)
    unit.wait_state("ended")
    if hang_up == "cancelled":
        ending.cancel()
        unit.wait_state("idle")
    assert unit.offer(unit.bela, resume=True).kind == "bye"
    unit.wait_state("idle")
    assert unit.states() == ["ringing", "connected", "ended", "idle"]


def test_a_caller_told_its_call_was_lost_there_ends_it_as_lost(flow_unit: Callable[..., FlowUnit]) -> None:
    unit = flow_unit(reconnect_seconds=5)
    unit.replies = [(Signal(kind="answer", sdp=OFFER_SDP), 0.0), (Signal(kind="lost"), 0.0)]
    unit.engine.call("Bela")
    unit.wait(lambda: unit.engine.flow.session is not None)
    session = unit.open_session()
    unit.on_loop(lambda: unit.engine.flow.on_lost(session, "test: nothing heard"))  # type: ignore[arg-type]
    unit.wait_state("idle")  # at once, not after reconnect_seconds of re-offers
    assert unit.states() == ["calling", "connected", "reconnecting", "lost", "idle"]


def test_a_microphone_not_working_is_said_once_a_call_not_at_every_attempt() -> None:
    """Each reconnect attempt opens the microphone anew: "The microphone is not working." was said
    at every one, back to back for the 30 s a call tries to come back."""
    if platform.sound_cards():
        pytest.skip("a sound card here: its microphone may open")
    events = EventBus()
    watch = MicrophoneWatch(events)
    cfg = config.load(None, {"call": {"audio_in": "auto"}}, environ={}).call
    for call in range(2):
        watch.new_call()
        for _ in range(3):  # the call's first session, then two re-offers
            assert isinstance(open_input(cfg, watch), SilentInput)  # no microphone on this machine
        assert len(events.recent("microphone.unavailable")) == call + 1


def test_a_microphone_gone_during_recovery_ends_the_call(flow_unit: Callable[..., FlowUnit]) -> None:
    unit = flow_unit(reconnect_seconds=5)
    unit.replies = [(Signal(kind="answer", sdp=OFFER_SDP), 0.0)]
    unit.engine.call("Bela")
    unit.wait(lambda: unit.engine.flow.session is not None)
    session = unit.open_session()
    unit.session_error = CallError(MIC_GONE)
    unit.on_loop(lambda: unit.engine.flow.on_lost(session, "test: nothing heard"))  # type: ignore[arg-type]
    unit.wait_state("idle")  # at once, not after reconnect_seconds of failing re-offers
    assert unit.states() == ["calling", "connected", "reconnecting", "lost", "idle"]
    lost = [e for e in unit.seen if e.topic == "call.state" and e.data["state"] == "lost"]
    assert MIC_GONE in lost[0].data["reason"]


def test_a_microphone_gone_when_answering_fails_the_call(flow_unit: Callable[..., FlowUnit]) -> None:
    unit = flow_unit()
    unit.session_error = CallError(MIC_GONE)
    with pytest.raises(SignallingError, match="microphone"):
        unit.offer(unit.bela)
    unit.wait_state("idle")
    assert unit.states() == ["ringing", "failed", "idle"]
    unit.session_error = None
    assert unit.offer(unit.cara).kind == "answer"


def test_emotions_arrive_after_the_other_unit_restarts_and_calls_again(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Bela's process restarts mid-call and calls again at once: its offer replaces the session, and
    its expressions, numbered from 1 again, are said; the old session's are not."""
    unit = flow_unit()
    flow = unit.engine.flow
    said: list[str] = []
    unit.events.subscribe(lambda e: said.append(e.data["emotion"]) if e.topic == "remote.emotion" else None)

    def emotion(session: FakeSession, seq: int, name: str) -> None:
        message = messages.EmotionEvent(seq=seq, emotion=name, confidence=0.9)
        unit.on_loop(lambda: flow.on_message(session, message))  # type: ignore[arg-type]

    unit.offer(unit.bela)
    old = unit.open_session()
    emotion(old, 1200, "happiness")
    assert unit.offer(unit.bela).kind == "answer"  # not a resume: Bela's unit started afresh
    new = unit.open_session()
    emotion(old, 1201, "fear")
    for seq, name in enumerate(["sadness", "surprise", "anger"], start=1):
        emotion(new, seq, name)
    assert said == ["happiness", "sadness", "surprise", "anger"]


def test_a_unit_restarted_after_a_re_offer_calling_again_is_answered(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Bela's call recovered once (its re-offer numbered 2), then its process restarted (the
    watchdog) and it calls again at once, numbering its offers from 1 again: a new call, answered,
    not refused as older than the re-offer answered before. Its own re-offers then follow its new
    count: a newer one is answered, an older one still refused."""
    unit = flow_unit()
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    assert unit.offer(unit.bela, resume=True, number=2).kind == "answer"
    unit.open_session()
    assert unit.offer(unit.bela, number=1).kind == "answer"
    unit.open_session()
    assert unit.offer(unit.bela, resume=True, number=2).kind == "answer"
    assert unit.offer(unit.bela, resume=True, number=1).kind == "declined"
    assert unit.engine.state == "connected"


def test_a_guests_page_can_neither_rename_itself_nor_say_expressions(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """A guest's page is anyone's code: the name is the signed invite's and the expressions are the
    unit's own analysis of the guest's video, so the page's own hello and expressions are ignored;
    its bye still ends the call."""
    unit = flow_unit()
    flow = unit.engine.flow
    priya = Peer("d" * 32, "Priya", "guest", b"", time.time(), guest=True)
    heard: list[Event] = []
    unit.events.subscribe(lambda e: heard.append(e) if e.topic.startswith("remote.") else None)
    unit.offer(priya)
    page = unit.open_session()
    for message in (
        messages.Hello(name="Your bank", unit="d" * 32),
        messages.EmotionEvent(seq=1, emotion="happiness", confidence=0.9),
        messages.NoFace(seq=2),
        messages.Sharing(paused=True),
    ):
        unit.on_loop(lambda m=message: flow.on_message(page, m))  # type: ignore[arg-type, misc]
    assert flow.remote_name == "Priya" and heard == []
    unit.on_loop(lambda: flow.on_message(page, messages.Bye()))  # type: ignore[arg-type]
    unit.wait_state("idle")


@pytest.fixture
def owner_pages(tmp_path: Path) -> Iterator[tuple[FlaskClient, str, Node]]:
    """Bela's pages with its real call engine, and a browser logged in as the owner (and its CSRF)."""
    node = Node("Bela", tmp_path)
    parts = build_parts(node.cfg.web, node.me, node.store, node.events, call=node.engine)
    browser = create_app(lambda: {}, parts, [create_blueprint(node.engine)]).test_client()
    csrf = browser.get("/api/owner").get_json()["csrf"]
    assert browser.post("/api/owner/code", headers={"X-CSRF-Token": csrf}).status_code == 202
    code = node.events.recent("pairing.code")[-1].data["code"]
    r = browser.post("/api/owner/login", json={"code": code}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.get_json()
    try:
        yield browser, r.get_json()["csrf"], node
    finally:
        node.close()


def test_answer_and_hang_up_with_no_call_say_so_at_once(owner_pages: tuple[FlaskClient, str, Node]) -> None:
    """The caller gave up before Answer was pressed: the page says there is no call, without waiting
    for a change that cannot come, and never "Still connecting" or "Hung up"."""
    browser, csrf, node = owner_pages
    for button in ("/answer", "/hangup"):
        started = time.monotonic()
        r = browser.post(button, data={"csrf": csrf}, follow_redirects=True)
        assert time.monotonic() - started < 1.0, button
        page = r.get_data(as_text=True)
        assert r.status_code == 200 and "No call." in page, (button, page)
        assert "Still connecting" not in page and "Hung up." not in page, button
    assert node.states() == []


def test_log_out_after_the_login_ended_logs_out(owner_pages: tuple[FlaskClient, str, Node]) -> None:
    browser, csrf, node = owner_pages
    node.store.close_all_sessions()  # the login ended meanwhile (its hours passed, or another logout)
    r = browser.post("/logout", data={"csrf": csrf}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "You are logged out." in page, page
    assert "make the change again" not in page


def test_a_guest_offer_refused_before_ringing_leaves_a_one_time_invite_whole(tmp_path: Path) -> None:
    """Only a call that rings uses up a one-time invite: a malformed offer is refused (400) as often
    as it comes, and the guest's next, proper, call still gets through."""
    node = Node("Asha", tmp_path)
    guests = Guests(node.cfg.vision, "asha@relay.example.org", node.me, node.store, node.events)
    parts = build_parts(node.cfg.web, node.me, node.store, node.events, call=node.engine)
    page = create_app(lambda: {}, parts, guests.blueprints(node.engine, relay_connected)).test_client()
    invite = guests.invites.create("Priya", 3600, once=True)
    body = {
        "invite": guests.invites.token(invite, "asha@relay.example.org"),
        "call": "0" * 32,
        "signal": {"kind": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"},
    }
    from_guest = {RELAY_SENDER: "anonymous@guests.relay.example.org"}
    try:
        for _ in range(2):
            r = page.post(GUEST_PATH, json=body, environ_base=from_guest)
            assert r.status_code == 400, r.get_json()
        assert guests.invites.check(body["invite"]).used is None  # type: ignore[arg-type]
        assert node.states() == []
    finally:
        guests.close()
        node.close()


def test_two_guests_offering_at_once_get_one_call_and_one_busy(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """Two guests press Call in the same instant (the engine's loop busy a moment, so both offers
    are let in before either rings): one call rings and is answered, the other guest hears busy,
    and the line stays with the answered guest's call, whose hang-up ends it."""
    unit = flow_unit()
    jid = "asha@relay.example.org"
    guests = Guests(unit.cfg.vision, jid, unit.me, unit.store, unit.events)
    parts = build_parts(unit.cfg.web, unit.me, unit.store, unit.events, call=unit.engine)
    app = create_app(lambda: {}, parts, guests.blueprints(unit.engine, relay_connected))
    from_guest = {RELAY_SENDER: "anonymous@guests.relay.example.org"}

    def body(name: str, call: str, kind: str = "offer") -> dict[str, object]:
        invite = guests.invites.create(name, 3600, once=False)
        signal = {"kind": kind, "sdp": OFFER_SDP} if kind == "offer" else {"kind": kind}
        return {"invite": guests.invites.token(invite, jid), "call": call, "signal": signal}

    def post(message: dict[str, object]) -> tuple[int, dict[str, object]]:
        r = app.test_client().post(GUEST_PATH, json=message, environ_base=from_guest)
        return r.status_code, r.get_json()

    offers = [body("Priya", "1" * 32), body("Ravi", "2" * 32)]
    try:
        unit.engine.loop.call_soon_threadsafe(time.sleep, 1.0)  # the loop busy: both get in first
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(post, offers))
        assert sorted(code for code, _ in replies) == [200, 409], replies
        winner = offers[[code for code, _ in replies].index(200)]
        assert guests.line is not None and guests.line.current is not None
        assert guests.line.current.call == winner["call"]
        unit.open_session()
        unit.wait_state("connected")
        bye = {**winner, "signal": {"kind": "bye"}}
        assert post(bye)[0] == 200
        unit.wait_state("idle")
        loser = "Ravi" if winner is offers[0] else "Priya"  # its owner is told who tried
        assert [e.data for e in unit.events.recent("call.tried")] == [{"peer": loser, "guest": True}]
    finally:
        guests.close()


GUEST_JID = "asha@relay.example.org"
FROM_GUEST = {RELAY_SENDER: "anonymous@guests.relay.example.org"}


def guests_app(unit: Node) -> tuple[Guests, FlaskClient]:
    """``unit``'s guests' line (made anew: as after a restart) and its web app's client."""
    guests = Guests(unit.cfg.vision, GUEST_JID, unit.me, unit.store, unit.events)
    parts = build_parts(unit.cfg.web, unit.me, unit.store, unit.events, call=unit.engine)
    return guests, create_app(
        lambda: {}, parts, guests.blueprints(unit.engine, relay_connected)
    ).test_client()


@pytest.fixture
def guest_line(flow_unit: Callable[..., FlowUnit]) -> Iterator[tuple[FlowUnit, Guests, Callable[..., Any]]]:
    """Asha with her guests' line; ``post(name, call, kind)`` sends what a guest's page sends (kind
    "known": its question whether the unit has the call)."""
    unit = flow_unit()
    guests, page = guests_app(unit)
    tokens: dict[str, str] = {}

    def post(name: str, call: str, kind: str = "offer") -> tuple[int, dict[str, Any]]:
        if name not in tokens:
            tokens[name] = guests.invites.token(guests.invites.create(name, 3600, once=False), GUEST_JID)
        if kind == "known":
            r = page.post(
                GUEST_CALL_PATH, json={"invite": tokens[name], "call": call}, environ_base=FROM_GUEST
            )
            return r.status_code, r.get_json()
        signal = {"kind": kind, "sdp": OFFER_SDP} if kind == "offer" else {"kind": kind}
        body = {"invite": tokens[name], "call": call, "signal": signal}
        r = page.post(GUEST_PATH, json=body, environ_base=FROM_GUEST)
        return r.status_code, r.get_json()

    yield unit, guests, post
    guests.close()


def test_a_guests_bye_that_overtakes_the_offer_keeps_it_from_ringing(
    guest_line: tuple[FlowUnit, Guests, Callable[..., Any]],
) -> None:
    """The relay carries each request on a thread of its own: a page that cancels at once can have
    its bye handled before its offer. The offer then never rings (for a page that has gone)."""
    unit, _, post = guest_line
    assert post("Priya", "1" * 32, "bye")[0] == 403
    code, reply = post("Priya", "1" * 32)
    assert code == 403 and reply["reason"] == "ended", reply
    assert unit.states() == []
    assert post("Priya", "2" * 32)[1]["kind"] == "answer"  # her next call rings


def test_byes_from_many_pages_at_once_are_each_answered_and_the_newest_kept(
    guest_line: tuple[FlowUnit, Guests, Callable[..., Any]],
) -> None:
    """Byes for no call come on threads of their own (one per relay request): each is answered as
    such (two emptying the full table at once made one of them a 500), and the newest 64 are kept."""
    _, _, post = guest_line
    post("Priya", "0" * 32, "bye")  # her token made before the threads start
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: post("Priya", f"{i:032x}", "bye")[0], range(1, 100)))
    assert codes == [403] * 99
    assert post("Priya", f"{99:032x}")[1]["reason"] == "ended"  # cancelled: never rings
    assert post("Priya", f"{1:032x}")[1]["kind"] == "answer"  # long since dropped from the table


def test_a_guest_let_in_as_the_last_call_ends_keeps_the_line(
    guest_line: tuple[FlowUnit, Guests, Callable[..., Any]],
) -> None:
    """The engine reads idle a moment before it publishes idle: a guest's offer let in between is
    the call in progress, and the last call's idle must not forget it."""
    unit, guests, post = guest_line
    assert post("Priya", "1" * 32)[1]["kind"] == "answer"
    unit.open_session()
    unit.wait_state("connected")
    publish = unit.engine.publish_state

    def slow_idle(state: str, *args: Any, **kwargs: Any) -> None:
        if state == "idle":
            time.sleep(1.0)  # on the engine's loop: Ravi's offer is let in meanwhile
        publish(state, *args, **kwargs)

    unit.engine.publish_state = slow_idle  # type: ignore[method-assign]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        bye = pool.submit(post, "Priya", "1" * 32, "bye")  # answered once idle is published
        unit.wait(lambda: unit.engine.flow.state == "idle")
        assert post("Ravi", "2" * 32)[1]["kind"] == "answer"
        assert bye.result()[0] == 200
    assert guests.line is not None and guests.line.current is not None
    assert guests.line.current.call == "2" * 32


def test_a_guests_page_hears_whether_the_unit_still_has_its_call(flow_unit: Callable[..., FlowUnit]) -> None:
    """The page asks while the unit rings: a unit that restarted meanwhile (its guests' line made
    anew) does not know the call, also when it used up the call's one-time invite or the invite
    expired; the call in progress and the one that ended last (its "declined" may still be on the
    way) are known. Only a guest's page with an invite neither forged nor withdrawn is answered."""
    unit = flow_unit()
    unit.store.update_settings({"auto_answer": False})
    guests, page = guests_app(unit)
    token = guests.invites.token(guests.invites.create("Priya", 3600, once=True), GUEST_JID)
    call = {"invite": token, "call": "1" * 32}

    def known(client: FlaskClient, body: dict[str, str], sender: dict[str, str] = FROM_GUEST) -> Any:
        r = client.post(GUEST_CALL_PATH, json=body, environ_base=sender)
        return r.status_code, r.get_json()

    try:
        offer = {**call, "signal": {"kind": "offer", "sdp": OFFER_SDP}}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(page.post, GUEST_PATH, json=offer, environ_base=FROM_GUEST)
            unit.wait_state("ringing")
            assert known(page, call) == (200, {"known": True, "over": False})
            assert known(page, {**call, "call": "2" * 32}) == (200, {"known": False})
            unit.engine.answer()
            assert answer.result().get_json()["kind"] == "answer"
        assert known(page, call) == (200, {"known": True, "over": False})  # in progress
        bye = {**call, "signal": {"kind": "bye"}}
        assert page.post(GUEST_PATH, json=bye, environ_base=FROM_GUEST).status_code == 200
        unit.wait(lambda: unit.engine.flow.state == "idle")
        assert known(page, call) == (200, {"known": True, "over": True})  # the call that ended last
    finally:
        guests.close()
    guests, restarted = guests_app(unit)
    try:
        assert known(restarted, call) == (200, {"known": False})  # its one-time invite used up
        two_hours_ago = Invites(unit.me, unit.store, clock=lambda: time.time() - 7200)
        ended = two_hours_ago.create("Ravi", 3600, once=False)  # an hour ago
        withdrawn = guests.invites.create("Meena", 3600, once=False)
        guests.invites.revoke(withdrawn.id)
        expired = {**call, "invite": guests.invites.token(ended, GUEST_JID)}
        assert known(restarted, expired) == (200, {"known": False})
        assert known(restarted, {**call, "invite": guests.invites.token(withdrawn, GUEST_JID)})[0] == 403
        assert known(restarted, {**call, "invite": token[:-4] + "AAAA"})[0] == 403
        assert known(restarted, call, {RELAY_SENDER: "bela@relay.example.org"})[0] == 403
        assert known(restarted, {**call, "call": "not an id"})[0] == 400
    finally:
        guests.close()


def test_a_guests_offer_waiting_for_the_last_call_to_close_is_known_and_can_be_cancelled(
    guest_line: tuple[FlowUnit, Guests, Callable[..., Any]],
) -> None:
    """An offer that comes as the last call still closes waits for the close before it rings: the
    page's check meanwhile heard the unit did not know the call (and the page gave up on a unit
    about to ring), and a bye meanwhile did not stop it ringing for a page that had gone."""
    unit, _, post = guest_line
    unit.close_seconds = 1.5
    assert post("Priya", "1" * 32)[1]["kind"] == "answer"
    unit.open_session()
    unit.wait_state("connected")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bye = pool.submit(post, "Priya", "1" * 32, "bye")
        unit.wait(lambda: unit.engine.flow.state == "ended")  # the session's close takes 1.5 s
        before = len(unit.states())
        offer = pool.submit(post, "Ravi", "2" * 32)
        time.sleep(0.3)  # the offer is let in, and waits
        assert unit.engine.flow.state == "ended"  # still closing
        assert post("Ravi", "2" * 32, "known") == (200, {"known": True, "over": False})
        assert post("Ravi", "2" * 32, "bye")[0] == 403  # not the call in progress yet: remembered
        code, reply = offer.result()
        assert bye.result()[0] == 200
    assert code == 403 and reply["reason"] == "ended", reply  # and so never rung
    assert "ringing" not in unit.states()[before:]


def test_an_offer_says_whether_the_guest_sends_video() -> None:
    video = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
    head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    assert sends_video(head + video + "a=sendrecv\r\n")
    assert sends_video(head + video)  # no direction: sendrecv
    assert not sends_video(head + video + "a=recvonly\r\n")  # a browser without a camera
    assert not sends_video(head + video + "a=inactive\r\n")
    assert not sends_video(head)


GuestSend = Callable[..., tuple[int, dict[str, Any]]]


@contextmanager
def guest_on_the_line(unit: FlowUnit, once: bool = False) -> Iterator[tuple[Guests, Invite, GuestSend]]:
    """Priya calls ``unit`` from a browser, with a lasting invite and an offer that says it waits a
    second, and is connected. Yields the unit's guests, her invite, and ``send(call, **signal)``:
    her page's next offer (or other signal) as the relay brings it, and the answer's status and body."""
    jid = "asha@relay.example.org"
    guests = Guests(unit.cfg.vision, jid, unit.me, unit.store, unit.events)
    parts = build_parts(unit.cfg.web, unit.me, unit.store, unit.events, call=unit.engine)
    page = create_app(lambda: {}, parts, guests.blueprints(unit.engine, relay_connected)).test_client()
    invite = guests.invites.create("Priya", 3600, once=once)
    token = guests.invites.token(invite, jid)

    def send(call: str = "0" * 32, **signal: object) -> tuple[int, dict[str, Any]]:
        body = {"invite": token, "call": call, "signal": {"kind": "offer", "sdp": OFFER_SDP, **signal}}
        r = page.post(
            GUEST_PATH, json=body, environ_base={RELAY_SENDER: "anonymous@guests.relay.example.org"}
        )
        return r.status_code, dict(r.get_json())

    try:
        status, answer = send(wait=1)
        assert status == 200 and answer["kind"] == "answer", answer
        unit.open_session()
        unit.wait_state("connected")
        yield guests, invite, send
    finally:
        guests.close()


def test_withdrawing_the_invite_of_a_guest_call_in_progress_ends_it(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """A guest's offer is not timed (an offer's wait counts from its signed stamp, and a guest's is
    not signed): one that says it waits a second rings all the same. The owner withdraws the
    invite while the guest is on the line: the call ends at once, and the guest's page cannot come
    back with a re-offer after a drop."""
    unit = flow_unit()
    with guest_on_the_line(unit) as (guests, invite, send):
        assert guests.invites.revoke(invite.id) is not None and guests.line is not None
        assert guests.line.withdrawn(invite)  # what the owner's page calls once it withdrew it
        unit.wait_state("idle")
        status, answer = send(resume=True)
        assert status == 403 and answer["reason"] in ("ended", "revoked"), answer


@pytest.mark.parametrize("ending", ["lost", "bye"])
def test_a_guests_re_offer_for_a_call_over_here_says_whether_it_was_hung_up(
    flow_unit: Callable[..., FlowUnit], ending: str
) -> None:
    """Priya's page re-offers after the unit's side of the call is over: "lost" when the unit
    stopped waiting for it (the page must not say that Asha hung up), "bye" when Asha hung up. A
    re-offer for a call the unit does not know (it restarted during the call) is "lost" too: the
    page said "Asha hung up" after a restart."""
    unit = flow_unit(reconnect_seconds=0.3)
    with guest_on_the_line(unit) as (_, _, send):
        flow = unit.engine.flow
        if ending == "bye":
            unit.engine.hangup()
        else:
            session = flow.session
            unit.on_loop(lambda: flow.on_lost(session, "test: nothing heard"))  # type: ignore[arg-type]
        unit.wait_state("idle")
        status, answer = send(resume=True)
        assert status == 200 and answer["kind"] == ending, answer
        status, answer = send(call="1" * 32, resume=True)
        assert status == 200 and answer["kind"] == "lost", answer


def test_a_guest_hears_nothing_of_the_owners_sharing(flow_unit: Callable[..., FlowUnit]) -> None:
    """A guest never receives the owner's expressions, so whether the owner shares them (or that the
    owner's camera failed) is none of the page's business; a paired unit is told."""
    unit = flow_unit()
    with guest_on_the_line(unit):
        session = unit.engine.flow.session
        assert isinstance(session, FakeSession)
        sharing = unit.store.settings().share_expressions
        unit.store.update_settings({"share_expressions": not sharing})
        unit.store.update_settings({"share_expressions": sharing})
        time.sleep(0.2)
        told = [m for m in session.sent if isinstance(m, messages.Sharing)]
    assert told == []
    unit.engine.hangup()
    unit.wait_state("idle")
    assert unit.offer(unit.bela).kind == "answer"
    session = unit.open_session()
    unit.store.update_settings({"share_expressions": not sharing})
    time.sleep(0.2)
    assert [m for m in session.sent if isinstance(m, messages.Sharing)]  # a unit is told


def test_a_guests_re_offer_after_a_restart_is_lost_with_a_one_time_invite_too(
    flow_unit: Callable[..., FlowUnit],
) -> None:
    """A one-time invite (the default) is used when its call rings: after the unit restarted, the
    page's re-offer for that call was refused as a used invite, and the page said Asha hung up."""
    unit = flow_unit()
    with guest_on_the_line(unit, once=True) as (_, _, send):
        status, answer = send(call="1" * 32, resume=True)  # a call the unit does not know
        assert status == 200 and answer["kind"] == "lost", answer


# What each unit says -------------------------------------------------------------------------------


@pytest.fixture
def ears() -> Iterator[Callable[[EventBus, WavSpeaker], Announcer]]:
    """A unit's speech (announcer and narrator, English, fast) on its bus and speaker."""
    made: list[tuple[Narrator, Announcer]] = []

    def listen(events: EventBus, speaker: WavSpeaker) -> Announcer:
        announcer = Announcer(speaker, Espeak(rate_wpm=320), Phrases("en"), min_interval_s=0)
        made.append((Narrator(events, announcer, settle_s=0.05, sharing=True), announcer))
        return announcer

    yield listen
    for narrator, announcer in made:
        narrator.close()
        announcer.close()


def said(announcer: Announcer) -> list[str]:
    assert announcer.wait_idle(20)
    return [s.item.text or announcer.phrases.emotion(s.item.peer, s.item.label) for s in announcer.spoken]


def call_over(node: Node) -> Callable[[], bool]:
    return lambda: node.engine.state == "idle" and len(node.states()) > 1


def test_a_ring_is_said_again_until_it_is_missed(
    nodes: Callable[..., Node], ears: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bela's owner is in another room: the ring is said again, short, every 6 s, and a ring let out
    says who called ("Missed call from Asha."), not a plain "Call ended.". Asha hears that her call
    still rings there, not silence until "Bela did not answer."."""
    monkeypatch.setattr(calls_module, "CALLING_AGAIN_SECONDS", 5.0)
    a, b = nodes("Asha"), nodes("Bela", ring_seconds=9)
    b.store.update_settings({"auto_answer": False})
    a.link(b)
    asha, bela = ears(a.events, a.speaker), ears(b.events, b.speaker)
    a.engine.call("Bela")
    b.wait(call_over(b), timeout=20)
    a.wait(call_over(a), timeout=20)
    assert said(bela) == [
        "Asha is calling. Answer on the web page.",  # no button here
        "Asha is calling.",
        "Missed call from Asha.",
    ]
    first, again, missed = (s.started_at for s in bela.spoken)
    assert again - first == pytest.approx(calls_module.RING_AGAIN_SECONDS, abs=1.0)
    assert missed - first == pytest.approx(9, abs=1.0)
    assert said(asha) == ["Calling Bela.", "Still calling Bela.", "Bela did not answer."]
    reminded = asha.spoken[1].started_at - asha.spoken[0].started_at
    assert reminded == pytest.approx(5, abs=1.0)


@pytest.mark.parametrize("owner", ["answers", "declines"])
def test_a_ring_answered_or_declined_is_not_said_again(
    nodes: Callable[..., Node], ears: Any, monkeypatch: pytest.MonkeyPatch, owner: str
) -> None:
    """The repeats stop with the ring; a ring the owner declines is no missed call."""
    monkeypatch.setattr(calls_module, "RING_AGAIN_SECONDS", 0.5)
    a, b = nodes("Asha"), nodes("Bela")
    b.store.update_settings({"auto_answer": False})
    a.link(b)
    bela = ears(b.events, b.speaker)
    a.engine.call("Bela")
    b.wait(lambda: len(b.events.recent("call.ring")) >= 2)
    if owner == "answers":
        b.engine.answer()
        b.wait(lambda: b.engine.state == "connected")
    else:
        b.engine.hangup()
        b.wait(call_over(b))
    rings = len(b.events.recent("call.ring"))
    time.sleep(1.5)
    assert len(b.events.recent("call.ring")) == rings
    heard = said(bela)
    end = "Connected to Asha." if owner == "answers" else "Call ended."
    assert end in heard and "Asha is calling." not in heard[heard.index(end) :], heard
    assert "Missed call from Asha." not in heard


@pytest.mark.parametrize("paired_as", ["Mum", "Asha"])
def test_a_unit_of_the_same_name_as_another_paired_one_is_said_with_its_number(
    nodes: Callable[..., Node], ears: Any, tmp_path: Path, paired_as: str
) -> None:
    """Bela's owner paired a unit named mum long ago; a second one, Mum, calls (or one paired as
    Asha, renamed Mum since, says so in its Hello). Every sentence and page of the call says "Mum (2)",
    as the button's choice numbers them ("Mum, number 2?"): "Mum is calling" would not say which."""
    first = Identity.load_or_create(tmp_path / "first-mum.key")
    a, b = nodes(paired_as), nodes("Bela")
    b.store.add_peer(first.unit_id, "mum", "192.0.2.9:8080", first.public_key)
    a.link(b)
    a.store.update_settings({"display_name": "Mum"})
    bela = ears(b.events, b.speaker)
    a.engine.call("Bela")
    b.wait(lambda: b.engine.state == "connected")
    a.events.publish("vision.emotion", "happiness", emotion="happiness", confidence=0.8, since=0.0)
    b.wait(lambda: any(e.topic == "remote.emotion" for e in b.seen))
    b.engine.hangup()
    b.wait(call_over(b))
    named = [e.data["peer"] for e in b.seen if e.topic in ("call.state", "remote.emotion") and e.data["peer"]]
    assert named[-2:] == ["Mum (2)", "Mum (2)"]  # its expression, and the call's end
    if paired_as == "Mum":
        assert set(named) == {"Mum (2)"} and said(bela)[0] == "Connected to Mum (2)."


def test_a_unit_that_cannot_be_reached_is_said_so(
    nodes: Callable[..., Node], ears: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing answers at Bela's address: "Bela cannot be reached right now.", not "The call
    failed."; the address is in no INFO line."""
    caplog.set_level(logging.INFO, logger="appliance")
    a = nodes("Asha")
    bela = Identity.load_or_create(a.store.path.parent / "bela.key")
    port = str(free_port())  # nothing listens there
    a.store.add_peer(bela.unit_id, "Bela", f"127.0.0.1:{port}", bela.public_key)
    asha = ears(a.events, a.speaker)
    a.engine.call("Bela")
    a.wait(call_over(a))
    assert said(asha) == ["Calling Bela.", "Bela cannot be reached right now."]
    failed = [e.data for e in a.seen if e.topic == "call.state"][-2]
    # Whom it was for: discovery checks that unit's announced address again (appliance/web/parts.py).
    assert (failed.get("cause"), failed.get("unit_id")) == (UNREACHABLE, bela.unit_id)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and port in r.getMessage()]


@contextmanager
def serving(node: Node) -> Iterator[str]:
    """``node``'s unit-to-unit API over HTTP on loopback, as ``emocall run`` serves it; its address."""
    parts = build_parts(node.cfg.web, node.me, node.store, node.events, call=node.engine)
    app = create_app(lambda: {}, parts, [create_blueprint(node.engine)])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        parts.close()


def test_a_unit_that_no_longer_knows_this_one_is_said_so(nodes: Callable[..., Node], ears: Any) -> None:
    """Bela's unit was unpaired from Asha's there (or forgot everything): it refuses Asha's signature,
    and Asha's owner hears to pair again. Paired again, the same call rings."""
    a, b = nodes("Asha"), nodes("Bela")
    b.store.update_settings({"auto_answer": False})
    asha = ears(a.events, a.speaker)
    with serving(b) as address:
        a.store.add_peer(b.me.unit_id, "Bela", address, b.me.public_key)
        a.engine.call("Bela")
        a.wait(call_over(a))
        assert said(asha) == ["Calling Bela.", "Bela does not know this unit any more. Pair again."]
        assert [e.data.get("cause") for e in a.seen if e.topic == "call.state"][-2] == NOT_KNOWN
        assert b.states() == []
        b.store.add_peer(a.me.unit_id, "Asha", "127.0.0.1:1", a.me.public_key)
        a.engine.call("Bela")
        b.wait(lambda: b.engine.state == "ringing")
        a.engine.hangup()
        b.wait(call_over(b))


def test_expressions_that_cannot_be_described_mid_call_are_said_on_the_other_side(
    nodes: Callable[..., Node], ears: Any
) -> None:
    """Asha's unit can no longer describe her face (its model failed for good): Bela's unit says so
    rather than falling silent, and says when it can again."""
    a, b = nodes("Asha"), nodes("Bela")
    a.link(b)
    bela = ears(b.events, b.speaker)
    connect(a, b)
    a.events.publish("vision.unavailable", "emotions unavailable", reason="the Coral was unplugged")
    b.wait(lambda: len(b.events.recent("remote.sharing")) == 1)
    a.events.publish("vision.backend", "using the processor", backend="cpu", reason="")
    b.wait(lambda: len(b.events.recent("remote.sharing")) == 2)
    assert said(bela)[-2:] == [
        "Asha's expressions cannot be described right now.",
        "Asha's expressions can be described again.",  # her camera came back: no choice of hers
    ]


def test_a_sharing_message_without_a_reason_is_what_older_units_read() -> None:
    """Units before the reason existed refuse any field they do not know: a pause or resume without
    one goes out as it always did."""
    assert messages.encode(messages.Sharing(paused=True)) == '{"type":"sharing","paused":true}'
    told = messages.encode(messages.Sharing(paused=True, reason=UNAVAILABLE))
    assert messages.parse(told) == messages.Sharing(paused=True, reason=UNAVAILABLE)


def test_a_guests_face_that_cannot_be_described_is_said(tmp_path: Path, ears: Any) -> None:
    """The unit cannot analyse Priya's video (no model): her owner hears so, as for a unit."""
    cfg = config.load(None, {"vision": {"model_card": str(tmp_path / "missing.json")}}, environ={})
    events = EventBus()
    speaker = WavSpeaker(tmp_path / "speaker.wav")
    owner = ears(events, speaker)
    vision = GuestVision(cfg.vision, events)
    vision.start("Priya")
    try:
        deadline = time.monotonic() + 10
        while not events.recent("remote.sharing") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        vision.close()
    [paused] = events.recent("remote.sharing")
    assert paused.data["paused"] and paused.data["guest"]
    assert said(owner) == ["Priya's expressions cannot be described right now."]
    speaker.close()
