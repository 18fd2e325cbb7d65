"""The Pi's speaker path end to end, without a sound card: the mixer, the pipe to ``aplay -D
default``, pipewire-alsa, PipeWire and a null sink that plays in real time (tests/pipewire_sink.py).
An announcement must be heard promptly even though the device paces aplay: the pipe to aplay is
one page and the mixer keeps at most 20 ms in it (issue 19.8)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.alsa import MAX_QUEUED_SECONDS, AplaySpeaker

from .pipewire_sink import SinkRecorder, pipewire_sink

RATE = 48000
TRIES = 8


@pytest.fixture
def pipewire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    with pipewire_sink(tmp_path / "runtime") as env:
        for key in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"):
            monkeypatch.setenv(key, env[key])  # aplay, started by the speaker, finds PipeWire here
        yield env


def test_an_announcement_is_heard_promptly_through_aplay_and_pipewire(pipewire: dict[str, str]) -> None:
    recorder = SinkRecorder(pipewire)
    speaker = AplaySpeaker("default")
    try:
        assert speaker.pipe_bytes == os.sysconf("SC_PAGE_SIZE")
        beep = (8000 * np.sin(2 * np.pi * 1000 * np.arange(RATE // 10) / RATE)).astype(np.int16)
        speaker.write_call(np.zeros(RATE // 2, np.int16))
        latencies, queued = [], []
        for _ in range(TRIES):
            time.sleep(0.4)  # silence between beeps, and the device paces aplay meanwhile
            queued.append(speaker.queued_bytes())
            start = time.monotonic()
            speaker.play(beep, RATE)
            latencies.append(recorder.sound_after(start) - start)
    finally:
        speaker.close()
        recorder.close()
    ms = np.array(latencies) * 1000
    print(
        f"event to sound through aplay and PipeWire: median {np.median(ms):.0f} ms, max {ms.max():.0f} ms "
        f"over {TRIES} beeps; pipe {speaker.pipe_bytes} bytes, at most {max(queued)} bytes waiting in it"
    )
    assert max(queued) <= (MAX_QUEUED_SECONDS + 0.01) * RATE * 2  # one mixer block over the limit
    assert np.median(ms) < 400  # about 160 ms here when quiet, 830 ms with the default pipe
