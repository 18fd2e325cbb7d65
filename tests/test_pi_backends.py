"""The Pi-only backends' failure paths, run here against stand-ins for the Pi's libraries.

picamera2 and libedgetpu do not exist on this machine. What is tested is our side of each failure a
real Pi produces (documented in the libraries' trackers): picamera2's import raising ValueError, a
missing camera, a camera that stalls or fails to start or stop, a libedgetpu that segfaults, a
Coral another process has open (tests/fake_coral.py stands in for the device and libedgetpu), a
missing screen device, gpiozero's pin libraries missing; and how a picture fills the screen's
buffer. The stand-in picamera2 behaves as the real one does in those cases; the Edge TPU crash is
a real segfault in a real child process.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pygame
import pytest

from appliance import config, platform, selftest
from appliance.call.media import AUDIO_SAMPLES
from appliance.call.microphone import MAX_LEFT_SAMPLES, Blocks
from appliance.camera import CameraError
from appliance.camera.capture import Capture
from appliance.camera.picamera2 import Picamera2Source
from appliance.camera.select import opener
from appliance.camera.webcam import usb_cameras
from appliance.controls.button import open_button
from appliance.display import DisplayError
from appliance.display.kmsdrm import KmsdrmScreen, buffer_surface
from appliance.display.select import connected_screens
from appliance.events import EventBus
from appliance.vision import coral
from appliance.vision.card import load_card
from appliance.vision.litert import InterpreterError, edgetpu_interpreter
from appliance.vision.select import open_detector, open_pipeline
from tests.fake_coral import edgetpu_card, fake_libedgetpu, fake_usb_devices, openers

ROOT = Path(__file__).resolve().parents[1]

# A picamera2 with the real one's failure modes, chosen by the module attribute PLAN.
FAKE_PICAMERA2 = """
import os, time
import numpy as np
PLAN = {"cameras": 1, "start": None, "stop": None, "stall": False, "shape": (480, 640, 4)}
OPEN = []
if os.environ.get("FAKE_PICAMERA2_IMPORT"):
    # apt's simplejpeg against a venv's numpy 2 (picamera2 issues 1088, 1211)
    raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")

class Picamera2:
    def __init__(self):
        self._fds = os.pipe()  # the real one opens a pipe before it looks for a camera
        self.released = False
        OPEN.append(self)
    @staticmethod
    def global_camera_info():
        return [{"Model": "imx708"}] * PLAN["cameras"]
    def create_video_configuration(self, **kwargs):
        return kwargs
    def configure(self, config):
        pass
    def start(self):
        if PLAN["start"]:
            raise RuntimeError(PLAN["start"])
    def capture_array(self, name="main", wait=None):
        return "job"
    def wait(self, job, timeout=None):
        if PLAN["stall"]:
            time.sleep(timeout)
            raise TimeoutError
        time.sleep(0.02)
        return np.zeros(PLAN["shape"], np.uint8)
    def stop(self):
        if PLAN["stop"]:
            raise RuntimeError(PLAN["stop"])
    def close(self):
        for fd in self._fds:
            os.close(fd)
        self.released = True
"""


@pytest.fixture
def picamera2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    package = tmp_path / "lib" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_PICAMERA2)
    monkeypatch.syspath_prepend(str(package.parent))
    sys.modules.pop("picamera2", None)
    import picamera2 as module

    yield module
    sys.modules.pop("picamera2", None)


def open_fds() -> int:
    # Threads left by earlier tests may close a descriptor meanwhile, so the
    # tests below hold the count from growing rather than to equality.
    return len(os.listdir("/proc/self/fd"))


def test_picamera2_import_failure_is_a_camera_error_and_the_capture_shows_the_pattern(
    picamera2: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.modules.pop("picamera2", None)
    monkeypatch.setenv("FAKE_PICAMERA2_IMPORT", "1")
    with pytest.raises(CameraError, match=r"cannot be imported \(ValueError.*--system-site-packages"):
        Picamera2Source(640, 480, 15)
    events = EventBus()
    seen: list[str] = []
    events.subscribe(lambda e: seen.append(e.topic))
    cfg = config.CameraConfig(source="picamera2")
    capture = Capture(opener(cfg), events, retry_seconds=0.2).start()
    try:
        frame = capture.wait_newer(-1, timeout=5)
        time.sleep(0.5)  # a few retries, each failing the same way
        assert frame is not None and capture.active == "pattern"
        assert seen[0] == "camera.lost"
        assert capture.wait_newer(frame.index, timeout=2) is not None  # the thread is alive
    finally:
        capture.close()


def test_no_camera_leaks_no_descriptor_across_retries(picamera2: ModuleType) -> None:
    picamera2.PLAN["cameras"] = 0
    before = open_fds()
    for _ in range(50):
        with pytest.raises(CameraError, match="no Pi camera found"):
            Picamera2Source(640, 480, 15)
    assert open_fds() <= before
    assert picamera2.OPEN == []  # found missing before Picamera2() opened anything


def test_a_camera_that_fails_to_start_is_released(picamera2: ModuleType) -> None:
    picamera2.PLAN["start"] = "Failed to start camera: Device or resource busy"
    before = open_fds()
    with pytest.raises(CameraError, match=r"cannot start.*busy"):
        Picamera2Source(640, 480, 15)
    assert [c.released for c in picamera2.OPEN] == [True]
    assert open_fds() <= before


def test_a_stalled_camera_is_reported_lost(picamera2: ModuleType) -> None:
    events = EventBus()
    lost = threading.Event()
    events.subscribe(lambda e: lost.set() if e.topic == "camera.lost" else None)
    source = Picamera2Source(640, 480, 15, frame_timeout=0.3)
    assert source.read().image.shape == (480, 640, 3)
    picamera2.PLAN["stall"] = True
    capture = Capture(lambda: source, events, retry_seconds=30).start()
    try:
        assert lost.wait(5), "a camera that sends no frames must count as lost, not hang the thread"
        assert capture.active == "pattern"
    finally:
        capture.close()


def test_a_frame_that_is_no_colour_picture_is_a_failed_camera_said_by_the_selftest(
    picamera2: ModuleType,
) -> None:
    """picamera2 hands over a USB camera's raw YUYV frame in two dimensions: reading it was an
    IndexError, and `emocall selftest` ended in a traceback with no report of any part."""
    picamera2.PLAN["shape"] = (480, 1280)
    report = selftest.check_camera(config.load(None, {"camera": {"source": "picamera2"}}, environ={}))
    assert not report.ok and "480x1280 frame, not a colour picture" in report.detail, report


def test_stop_and_close_errors_become_a_camera_error_after_both_ran(
    picamera2: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    source = Picamera2Source(640, 480, 15)
    picamera2.PLAN["stop"] = "Camera is not started"
    with caplog.at_level(logging.WARNING), pytest.raises(CameraError, match="did not close cleanly"):
        source.close()
    assert picamera2.OPEN[0].released  # close() still ran after stop() failed
    assert "picamera2 stop failed: Camera is not started" in caplog.text


def test_selftest_reports_a_camera_that_will_not_close_instead_of_a_traceback(picamera2: ModuleType) -> None:
    """libcamera's stop can fail after a frame timeout: the close's CameraError, raised from a
    ``finally``, replaced the report, and `emocall selftest` printed a traceback and no part."""
    picamera2.PLAN["stop"] = "Camera frontend has timed out"
    cfg = config.load(None, {"camera": {"source": "picamera2"}}, environ={})
    report = selftest.check_camera(cfg)
    assert not report.ok and "delivered a 640x480 frame; then it would not close" in report.detail, report
    assert selftest.check_vision(cfg).part == "vision"  # its own frame, closed the same way


def test_auto_prefers_a_usb_camera_by_its_stable_name(tmp_path: Path) -> None:
    (tmp_path / "usb-Logitech_C270_1234-video-index0").touch()
    (tmp_path / "usb-Logitech_C270_1234-video-index1").touch()  # metadata node, not for capture
    assert usb_cameras(tmp_path) == [str(tmp_path / "usb-Logitech_C270_1234-video-index0")]
    assert usb_cameras(tmp_path / "absent") == []


@pytest.fixture(autouse=True)
def own_coral_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's Coral lock in its own folder: a test run beside this one (CI's) is not "the
    running unit" that has the Coral."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))


@pytest.fixture
def crashing_libedgetpu(tmp_path: Path) -> Path:
    """A shared library that segfaults when loaded, as a libedgetpu built for another TFLite does."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (Debian's gcc)"
    source = tmp_path / "crash.c"
    source.write_text(
        "#include <signal.h>\n__attribute__((constructor)) static void f(void) { raise(SIGSEGV); }\n"
    )
    library = tmp_path / "libedgetpu.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60)
    return library


def test_an_edgetpu_runtime_that_segfaults_is_caught_in_a_child_and_the_unit_falls_back(
    crashing_libedgetpu: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The compiled *_edgetpu.tflite files are made on a build host with edgetpu_compiler; the crash
    # happens when the delegate loads, before any model is read, so the shipped int8 file serves.
    model = load_card().model_path()
    monkeypatch.setenv(platform.EDGETPU_LIBRARY_ENV, str(crashing_libedgetpu))
    started = time.monotonic()
    with pytest.raises(InterpreterError, match=r"crashed \(SIGSEGV\).*libedgetpu does not match"):
        edgetpu_interpreter(model)
    detector, choice = open_detector(config.VisionConfig(detector="edgetpu", detector_model=model))
    assert choice.backend == "haar" and "crashed (SIGSEGV)" in choice.reason
    assert time.monotonic() - started < 60  # and this process is still here to say so
    detector.close()
    # A Coral that is there but fails is said as such, not as "Coral not found".
    monkeypatch.setattr(platform, "SYS_USB", fake_usb_devices(tmp_path / "usb"))
    events = EventBus()
    card = edgetpu_card(tmp_path / "models")
    open_pipeline(config.VisionConfig(classifier="edgetpu", model_card=card), events).close()
    (backend,) = events.recent("vision.backend")
    assert backend.data["backend"] == "cpu" and backend.data["coral"] == "failed", backend


def test_a_picture_lands_in_the_screen_buffer_as_xrgb_rows() -> None:
    # The Pi's screen is a DRM dumb buffer (XRGB8888, rows `pitch` bytes apart); the row padding is
    # the driver's and stays untouched.
    width, height, pitch = 16, 12, 16 * 4 + 32
    buffer = bytearray(b"\xaa" * pitch * height)
    picture = pygame.Surface((width, height))
    picture.fill((10, 20, 30))
    picture.fill((200, 100, 50), pygame.Rect(8, 6, 8, 6))  # the bottom-right quarter
    buffer_surface(buffer, (width, height), pitch).blit(picture, (0, 0))
    rows = [buffer[y * pitch : (y + 1) * pitch] for y in range(height)]
    assert rows[0][:3] == bytes([30, 20, 10])  # blue, green, red in memory
    assert rows[height - 1][(width - 1) * 4 : width * 4 - 1] == bytes([50, 100, 200])
    assert all(row[width * 4 :] == b"\xaa" * 32 for row in rows)


def test_a_screen_buffer_rounded_up_to_whole_pages_is_drawn_on() -> None:
    """virtio-gpu and USB displays round a dumb buffer up to a page (1366x768: 4,198,400 bytes for
    4,196,352): pygame refused it, and the unit did not start. A buffer short of its rows is a
    DisplayError."""
    width, height, pitch = 1366, 768, 1366 * 4
    buffer = bytearray((pitch * height + 4095) // 4096 * 4096)
    picture = pygame.Surface((width, height))
    picture.fill((10, 20, 30))
    buffer_surface(buffer, (width, height), pitch).blit(picture, (0, 0))
    assert buffer[(height - 1) * pitch : (height - 1) * pitch + 3] == bytes([30, 20, 10])
    assert buffer[pitch * height :] == bytes(len(buffer) - pitch * height)


def test_the_selftest_counts_only_connectors_with_a_screen_plugged_in(tmp_path: Path) -> None:
    """A Pi has /dev/dri/card* with no screen on it: the display part read ok on the device alone.
    The kernel's sysfs says, per connector, whether a screen is plugged in (as the running unit's
    KmsdrmScreen finds "no connected screen")."""
    for connector, status in (("card0-HDMI-A-1", "disconnected"), ("card0-HDMI-A-2", "connected")):
        (tmp_path / connector).mkdir()
        (tmp_path / connector / "status").write_text(f"{status}\n")
    (tmp_path / "card0").mkdir()  # the device itself, no status
    assert connected_screens(tmp_path) == ["HDMI-A-2"]
    (tmp_path / "card0-HDMI-A-2" / "status").write_text("disconnected\n")
    assert connected_screens(tmp_path) == []


def test_a_missing_or_wrong_screen_device_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(DisplayError, match=r"no DRM device.*video group"):
        KmsdrmScreen(cards=[])
    not_drm = tmp_path / "card0"
    not_drm.write_bytes(b"")
    with pytest.raises(DisplayError, match=rf"{not_drm}: .*Inappropriate ioctl.*screen plugged in"):
        KmsdrmScreen(cards=[not_drm])


def test_a_button_without_gpio_names_every_pin_library_it_tried(caplog: pytest.LogCaptureFixture) -> None:
    from appliance.controls import ControlError

    with pytest.raises(ControlError) as raised:
        open_button(17, 1.0)
    assert "lgpio" in str(raised.value)


def test_a_button_logs_which_pin_factory_it_uses(caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        with caplog.at_level(logging.INFO):
            button = open_button(17, 1.0)
        button.close()
    finally:
        Device.pin_factory = previous
    assert "button on pin 17 through MockFactory" in caplog.text


def test_a_missing_edgetpu_library_gives_the_probe_s_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(platform.EDGETPU_LIBRARY_ENV, str(tmp_path / "libedgetpu.so.1"))
    with pytest.raises(InterpreterError) as raised:
        edgetpu_interpreter(load_card().model_path())
    assert "the Edge TPU cannot run" in str(raised.value)
    assert "AttributeError" not in str(raised.value)  # LiteRT's noise after the reason


def test_the_microphone_stays_close_behind_the_sound_card_after_a_stall_or_with_drift() -> None:
    """The call's reads and the card's blocks run on two clocks: a stall (the loop busy for half a
    second) or a card 1 % fast must not leave the other person hearing the owner late for the rest
    of the call. Each block holds its own number, so a read says how far behind the card it is."""
    blocks, pushed = Blocks(), 0

    def card() -> None:
        nonlocal pushed
        blocks.push(np.full(AUDIO_SAMPLES, pushed, np.int16))
        pushed += 1

    def behind() -> int:
        return pushed - 1 - int(blocks.read(AUDIO_SAMPLES)[-1])

    card()
    assert behind() == 0
    for _ in range(25):  # half a second with no read
        card()
    lags = []
    for n in range(3000):
        card()
        if n % 100 == 0:  # the card 1 % fast
            card()
        lags.append(behind())
    assert max(lags[1:]) <= MAX_LEFT_SAMPLES // AUDIO_SAMPLES, max(lags)


# A process that opens the Coral ``sys.argv[1]`` times (a unit's classifier, then a guest's pipeline
# or the face detector), runs each model once, prints its id and keeps the Coral until stdin closes.
OPENS_THE_CORAL = """
import os, sys
import numpy as np
from appliance.vision.card import load_card
from appliance.vision.litert import Tensors, edgetpu_interpreter
for _ in range(int(sys.argv[1])):
    tensors = Tensors(edgetpu_interpreter(load_card().model_path()))
    tensors.run(np.zeros(tensors.shape[1:], np.float32))
print(os.getpid(), flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def coral_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process on this machine's (fake) Coral; FAKE_EDGETPU_OPENED lists who
    opened the device."""
    library = fake_libedgetpu(tmp_path / "lib")
    opened = str(tmp_path / "opened")
    return {platform.EDGETPU_LIBRARY_ENV: str(library), "FAKE_EDGETPU_OPENED": opened}


def test_a_process_that_has_the_coral_opens_it_again_without_a_probe(
    tmp_path: Path, coral_env: dict[str, str]
) -> None:
    """The probe's child would be a second process on the USB accelerator this one holds, which
    crashes this one (google-coral/edgetpu issue 237): it runs once, before the first opening."""
    env = {**os.environ, **coral_env}
    done = subprocess.run(
        [sys.executable, "-c", OPENS_THE_CORAL, "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    unit = int(done.stdout.split()[-1])
    opened = openers(tmp_path / "opened")
    assert len(opened) == 3 and opened[1:] == [unit, unit], opened  # the probe's child, then the unit twice
    assert opened[0] != unit


def test_the_coral_of_the_running_unit_is_left_alone_by_another_process(
    tmp_path: Path, coral_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`emocall selftest` beside the running unit: it does not open the Coral the unit has (which
    would crash the unit), says that the unit has it, and does not count that as a fault."""
    env = {**os.environ, **coral_env}
    unit = subprocess.Popen(
        [sys.executable, "-c", OPENS_THE_CORAL, "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert unit.stdout is not None
        assert unit.stdout.readline().strip() == str(unit.pid)  # it has the Coral
        before = openers(tmp_path / "opened")
        for name, value in coral_env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(platform, "SYS_USB", fake_usb_devices(tmp_path / "usb"))
        edgetpu = selftest.check_edgetpu()
        cfg = config.load(
            None, {"vision": {"model_card": str(edgetpu_card(tmp_path / "models"))}}, environ={}
        )
        vision = selftest.check_vision(cfg)
        assert openers(tmp_path / "opened") == before  # neither this process nor a probe of its own
    finally:
        assert unit.stdin is not None
        unit.stdin.close()
        unit.wait(timeout=30)
    assert unit.returncode == 0  # the unit is still there (and did not crash)
    assert coral.in_use_elsewhere() is None  # its lock went with it: the next unit may have the Coral
    in_use = f"the Coral is in use by the running unit (process {unit.pid} holds"
    assert edgetpu.ok and edgetpu.detail.startswith("usb:1-1 with ") and in_use in edgetpu.detail
    assert vision.ok and vision.backend == "haar+cpu" and in_use in vision.detail, vision
