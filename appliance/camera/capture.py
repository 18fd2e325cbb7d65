"""Runs one camera source in a thread: the newest frame wins, a lost device is reopened.

Consumers (the call's video track, the vision worker) never wait on the device: ``latest()``
returns the newest frame at once, ``wait_newer()`` blocks until one newer than a given index.
While the real source is down the capture shows the "no camera" pattern and retries every
``retry_seconds``; the loss and the recovery are published as events.

Outside calls the appliance pauses it (:meth:`Capture.pause`): the camera is closed, idle and cool,
nothing is captured and the last frame is dropped; :meth:`Capture.resume` opens it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from appliance.camera import CameraError, EndOfStream, Frame, FrameSource
from appliance.camera.pattern import PatternSource
from appliance.events import EventBus

log = logging.getLogger(__name__)

Opener = Callable[[], FrameSource]


class Capture:
    def __init__(
        self,
        opener: Opener,
        events: EventBus,
        *,
        retry_seconds: float = 3.0,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
    ) -> None:
        self._opener, self._events, self._retry = opener, events, retry_seconds
        self._fallback = PatternSource(width, height, fps)
        self._source: FrameSource | None = None
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._count = 0
        self._stop = threading.Event()
        self._awake = threading.Event()  # cleared while paused
        self._awake.set()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self.ended = False  # a non-looping file has finished
        self.active = "none"  # the backend delivering frames now
        self._lost = False  # "camera.lost" was the last news: the next open is a recovery

    def start(self) -> Capture:
        self._thread.start()
        return self

    def pause(self) -> None:
        """Close the camera after the frame being read, and drop the newest frame: the next call's
        video and analysis must not start with the last picture of the call before (while the
        camera opens again, consumers get no frame at all)."""
        self._awake.clear()
        self._drop_latest()

    def resume(self) -> None:
        self._awake.set()

    @property
    def paused(self) -> bool:
        return not self._awake.is_set()

    def latest(self) -> Frame | None:
        with self._cond:
            return self._latest

    def wait_newer(self, index: int, timeout: float) -> Frame | None:
        """The newest frame with ``index`` greater than the given one, or None on timeout/end."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._latest is None or self._latest.index <= index) and not self.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(remaining)
            return self._latest if self._latest is not None and self._latest.index > index else None

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            # Re-number so consumers see one increasing sequence across reopens and fallbacks.
            self._latest = replace(frame, index=self._count)
            self._count += 1
            self._cond.notify_all()

    def _try_open(self, retry: bool) -> None:
        """Open the real source; a failed ``retry`` is not news, the loss was published already."""
        try:
            self._source = self._opener()
        except Exception as e:  # CameraError, or a backend's own (see _run)
            if not retry:
                self._publish_lost(f"camera unavailable: {e}", e)
            self.active = "pattern"
            return
        self.active = self._source.name
        # Also after a pause: a camera lost in one call and back for the next must be said to be back.
        topic = "camera.recovered" if self._lost else "camera.ready"
        self._lost = False
        self._events.publish(topic, f"camera ready ({self._source.name})", backend=self._source.name)

    def _publish_lost(self, message: str, error: Exception) -> None:
        self._lost = True
        self._events.publish("camera.lost", message, reason=str(error))

    def _run(self) -> None:
        self._try_open(retry=False)
        next_retry = time.monotonic() + self._retry
        while not self._stop.is_set():
            if not self._awake.is_set() and self._latest is not None:
                self._sleep()
                next_retry = time.monotonic() + self._retry
            if self._source is None:
                self._publish(self._fallback.read())
                if time.monotonic() >= next_retry:
                    next_retry = time.monotonic() + self._retry
                    self._try_open(retry=True)
                continue
            try:
                self._publish(self._source.read())
            except EndOfStream as e:
                log.info("%s", e)
                self._finish()
                return
            except Exception as e:
                # CameraError, or whatever a backend did not foresee (picamera2 handed a USB
                # webcam's 2-D YUYV picture): a lost camera, retried, not a thread that ends
                # and leaves the call's video frozen on its last frame unsaid.
                if not isinstance(e, CameraError):
                    log.exception("the camera failed")
                self._close_source()
                self.active = "pattern"
                self._publish_lost(f"camera lost: {e}", e)
                next_retry = time.monotonic() + self._retry

    def _drop_latest(self) -> None:
        with self._cond:
            self._latest = None

    def _sleep(self) -> None:
        """Paused: release the camera and wait for :meth:`resume` (or close)."""
        self._close_source()
        self._drop_latest()  # again: the frame being read when pause() came was published after it
        while not self._awake.wait(0.5) and not self._stop.is_set():
            pass
        if not self._stop.is_set():
            self._try_open(retry=False)

    def _finish(self) -> None:
        self._close_source()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def _close_source(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            except Exception as e:  # a failed close must not stop the capture
                log.warning("closing the camera failed: %s", e)
            self._source = None

    def close(self) -> None:
        self._stop.set()
        self._awake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._close_source()
