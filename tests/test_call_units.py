"""Two units as two OS processes on this machine's real interface: a call with video and audio both
ways, emotion events in order, hang-up from either side, and the `emocall call` path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.wav import read_wav

from .call_unit import Unit, paired_units, write_tone
from .conftest import CLIPS, need


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
