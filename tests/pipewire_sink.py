"""The Pi's audio path without a sound card: PipeWire and WirePlumber (in their own runtime directory
and D-Bus session) with one null sink, which consumes audio in real time like a sound card. ``aplay
-D default`` reaches it through pipewire-alsa, exactly as on the image; :class:`SinkRecorder` hears
what the sink plays (its monitor), stamped with the time each piece arrived.

Used by tests/test_call_stress_speaker.py and benchmarks/speaker_latency.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

SINK = "emocall-test-sink"
RATE = 48000
PROGRAMS = ("dbus-daemon", "pipewire", "wireplumber", "pw-cli", "pw-record", "aplay")


class PipeWireUnavailable(Exception):
    """PipeWire cannot run here (the message says what to install)."""


@contextmanager
def pipewire_sink(runtime_dir: Path) -> Iterator[dict[str, str]]:
    """PipeWire with the null sink as the default output; yields the environment that reaches it."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        raise PipeWireUnavailable(
            f"missing {', '.join(missing)}: apt-get install pipewire pipewire-alsa pipewire-bin "
            "wireplumber dbus-daemon alsa-utils"
        )
    runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    bus = runtime_dir / "bus"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={bus}"}
    log = (runtime_dir / "pipewire.log").open("w")
    with ExitStack() as stack:
        stack.callback(log.close)

        def spawn(*command: str) -> None:
            stack.callback(_end, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

        spawn("dbus-daemon", "--session", "--nofork", f"--address=unix:path={bus}")
        _wait_for(bus.exists)
        spawn("pipewire")
        _wait_for((runtime_dir / "pipewire-0").exists)
        spawn("wireplumber")
        spec = (
            f"{{ factory.name=support.null-audio-sink node.name={SINK} media.class=Audio/Sink "
            f"object.linger=true audio.position=[MONO] audio.rate={RATE} }}"
        )
        subprocess.run(
            ["pw-cli", "create-node", "adapter", spec], env=env, check=True, timeout=10, stdout=log
        )
        _wait_for(lambda: SINK in _nodes(env))
        yield env


def _nodes(env: dict[str, str]) -> str:
    return subprocess.run(
        ["pw-cli", "ls", "Node"], env=env, capture_output=True, text=True, timeout=10
    ).stdout


def _wait_for(ready: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise PipeWireUnavailable("PipeWire did not start; see pipewire.log in its runtime directory")
        time.sleep(0.05)


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class SinkRecorder:
    """Records the sink's monitor (``pw-record``) and notes when sound first arrives after a time."""

    def __init__(self, env: dict[str, str], threshold: int = 2000) -> None:
        command = ["pw-record", "--target", SINK, "-P", "{ stream.capture.sink=true }", "--rate", str(RATE)]
        command += ["--channels", "1", "--format", "s16", "--latency", "5ms", "-"]
        self._proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._threshold = threshold
        self._loud: list[float] = []  # arrival times of pieces with sound in them
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while chunk := os.read(fd, 1024):
            now = time.monotonic()
            pcm = np.frombuffer(chunk[: len(chunk) // 2 * 2], "<i2")
            if pcm.size and int(np.abs(pcm.astype(np.int32)).max()) > self._threshold:
                with self._lock:
                    self._loud.append(now)

    def sound_after(self, t: float, timeout: float = 5.0) -> float:
        """The first time sound arrived after ``t`` (monotonic); AssertionError if none did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                later = [x for x in self._loud if x > t]
            if later:
                return later[0]
            time.sleep(0.005)
        raise AssertionError(f"no sound reached the sink within {timeout} s")

    def close(self) -> None:
        _end(self._proc)
