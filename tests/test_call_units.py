"""Two units as two OS processes on this machine's real interface: a call with video and audio both
ways, emotion events in order, hang-up from either side, and the `emocall call` path. And what a
unit says and shows when its microphone is missing or stops delivering sound."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance import config
from appliance.audio.wav import WavSpeaker, read_wav
from appliance.call.media import AUDIO_SAMPLES
from appliance.call.microphone import MicrophoneWatch, open_input
from appliance.display.offscreen import OffscreenScreen
from appliance.display.view import Display
from appliance.events import EventBus
from appliance.speech.announcer import Announcer
from appliance.speech.espeak import Espeak
from appliance.speech.narrator import Narrator
from appliance.words.phrases import Phrases

from .call_unit import Unit, paired_units, write_tone
from .conftest import CLIPS, need
from .test_call import Node, connect


def dominant_hz(path: Path) -> float:
    """The strongest frequency in what the speaker played (asserting there was a second of sound)."""
    pcm, rate = read_wav(path)
    blocks = pcm[: pcm.size // 480 * 480].reshape(-1, 480).astype(np.float64)
    loud = np.sqrt((blocks**2).mean(axis=1)) > 1000
    assert loud.sum() >= 100, f"{path} holds {loud.sum() / 100} s of sound"
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / pcm.size)


@pytest.fixture
def units(tmp_path: Path) -> Iterator[tuple[Unit, Unit]]:
    a, b = paired_units(tmp_path)
    try:
        a.start(
            "--source",
            str(need(CLIPS / "WolfgangLanger_Pexels.mp4")),
            "--audio-file",
            str(write_tone(tmp_path / "a.wav", 440)),
        )
        b.start(
            "--source",
            str(need(CLIPS / "single_face.mp4")),
            "--audio-file",
            str(write_tone(tmp_path / "b.wav", 880)),
        )
        yield a, b
    finally:
        a.close()
        b.close()


def test_call_carries_video_audio_and_emotions_both_ways_and_hangs_up(units: tuple[Unit, Unit]) -> None:
    a, b = units
    a.send("call Bela")
    a.wait_for("call.state", 20, state="connected")
    b.wait_for("call.state", 20, state="connected")
    assert [e["data"]["state"] for e in b.topics("call.state")] == ["ringing", "connected"]

    sequence = ["happiness", "surprise", "neutral", "sadness", "anger", "fear", "disgust", "contempt"]
    since = b.mark()
    for emotion in sequence:
        a.send(f"emit {emotion} 0.8")
    b.wait_for("remote.emotion", 10, since, emotion="contempt")
    received = b.topics("remote.emotion", since)
    assert [e["data"]["emotion"] for e in received] == sequence
    assert {e["data"]["peer"] for e in received} == {"Asha"}
    b.send("emit happiness 0.9")  # the other way too
    a.wait_for("remote.emotion", 10, emotion="happiness", peer="Bela")

    for unit in (a, b):
        unit.wait_status("frames_shown", 15, timeout=10)
        unit.wait_status("audio_seconds_received", 1.0, timeout=10)

    since_a = a.mark()
    b.send("hangup")  # the callee hangs up; the caller hears it
    a.wait_for("call.state", 10, since_a, state="ended", reason="remote hang-up")
    a.wait_for("call.state", 10, since_a, state="idle")
    b.wait_for("call.state", 10, state="idle")

    a.close()
    b.close()
    assert dominant_hz(b.data_dir / "speaker.wav") == pytest.approx(440, abs=10)
    assert dominant_hz(a.data_dir / "speaker.wav") == pytest.approx(880, abs=10)


def test_caller_hangs_up_and_emocall_call_places_a_call(units: tuple[Unit, Unit]) -> None:
    a, b = units
    result = emocall_cli("call", "Bela", port=a.port)
    assert result.returncode == 0, result.stderr
    a.wait_for("call.state", 20, state="connected")
    b.wait_for("call.state", 20, state="connected")
    busy = emocall_cli("call", "Bela", port=a.port)
    assert busy.returncode == 1
    assert "hang up first" in busy.stderr

    since_b = b.mark()
    result = emocall_cli("hangup", port=a.port)
    assert result.returncode == 0, result.stderr
    b.wait_for("call.state", 10, since_b, state="ended", reason="remote hang-up")
    b.wait_for("call.state", 10, since_b, state="idle")
    a.wait_for("call.state", 10, state="idle")
    assert a.status()["sessions_open"] == 0
    assert b.status()["sessions_open"] == 0


def emocall_cli(*args: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


NO_MICROPHONE = "The microphone is not working."


class Owner:
    """What a unit's owner hears (speech into a WAV) and sees (the display, off screen)."""

    def __init__(self, events: EventBus, folder: Path) -> None:
        self.speaker = WavSpeaker(folder / "owner.wav")
        self.announcer = Announcer(self.speaker, Espeak(rate_wpm=320), Phrases("en"), min_interval_s=0)
        self.narrator = Narrator(events, self.announcer, "quiet", settle_s=0.05)
        self.display = Display(OffscreenScreen((800, 480), folder / "display.png"), events, Phrases("en"))
        self.screen = folder / "display.txt"

    def said(self) -> list[str]:
        assert self.announcer.wait_idle(20)
        return [s.item.text for s in self.announcer.spoken if s.item.text]

    def shown(self) -> str:
        assert self.display.flush()
        return self.screen.read_text()

    def close(self) -> None:
        for part in (self.display, self.narrator, self.announcer, self.speaker):
            part.close()


def test_a_call_without_a_microphone_is_said_and_shown(tmp_path: Path) -> None:
    """This machine has no sound card: a call's microphone falls back to silence (``auto``), and
    the owner hears and sees that the other person hears nothing, even at the quietest level."""
    asha = Node("Asha", tmp_path, audio_in="auto")
    bela = Node("Bela", tmp_path)
    owner = Owner(asha.events, tmp_path)
    try:
        asha.link(bela)
        connect(asha, bela)
        said, shown = owner.said(), owner.shown()
        asha.engine.hangup()
    finally:
        owner.close()
        asha.close()
        bela.close()
    assert said[:3] == ["Calling Bela.", NO_MICROPHONE, "Connected to Bela."], said
    assert NO_MICROPHONE in shown.splitlines()
    assert "no microphone support" in asha.events.recent("microphone.unavailable")[0].data["reason"]


class SoundCard:
    """sounddevice (PortAudio) for a card that can be unplugged and plugged in again: it sends a
    block every 20 ms while plugged in, as the card's thread does."""

    PortAudioError = OSError

    def __init__(self) -> None:
        self.plugged = threading.Event()
        self.plugged.set()

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("sounddevice")
        fake.PortAudioError = self.PortAudioError  # type: ignore[attr-defined]
        fake.InputStream = self.stream  # type: ignore[attr-defined]
        return fake

    def stream(self, callback: Callable[..., None], **_: Any) -> Any:
        card, stop = self, threading.Event()

        def deliver() -> None:
            while not stop.wait(0.02):
                if card.plugged.is_set():
                    callback(np.zeros((AUDIO_SAMPLES, 1), np.int16), AUDIO_SAMPLES, None, None)

        class Stream:
            def start(self) -> None:
                threading.Thread(target=deliver, daemon=True).start()

            def stop(self) -> None:
                stop.set()

            def close(self) -> None:
                stop.set()

        return Stream()


def read_for(source: Any, seconds: float) -> None:
    """Read as the call's audio track does, every 20 ms."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        source.read(AUDIO_SAMPLES)
        time.sleep(0.02)


def test_a_microphone_that_comes_back_or_stops_delivering_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing at one call, there at the next; then unplugged in the call and plugged in again."""
    events = EventBus()
    owner = Owner(events, tmp_path)
    watch = MicrophoneWatch(events)
    cfg = config.load(None, {}, environ={}).call
    card = SoundCard()
    try:
        open_input(cfg, watch).close()  # no sounddevice here: silence
        monkeypatch.setitem(sys.modules, "sounddevice", card.module())
        microphone = open_input(cfg, watch)
        read_for(microphone, 0.5)
        card.plugged.clear()
        read_for(microphone, 2.5)
        assert NO_MICROPHONE in owner.shown().splitlines()
        card.plugged.set()
        read_for(microphone, 0.5)
        microphone.close()
        said, shown = owner.said(), owner.shown()
    finally:
        owner.close()
    back = "The microphone works again."
    assert said == [NO_MICROPHONE, back, NO_MICROPHONE, back]
    assert NO_MICROPHONE not in shown
