"""Runs one camera source in a thread: the newest frame wins, a lost device is reopened.

Consumers (the call's video track, the vision worker) never wait on the device: ``latest()``
returns the newest frame at once, ``wait_newer()`` blocks until one newer than a given index.
While the real source is down the capture shows the "no camera" pattern and retries after
``retry_seconds``, twice as long after each failed retry (``timing.backoff``); the
loss and the recovery are published as events. A camera counts as back only once it delivers a
frame: one that opens and fails at its first read (a loose ribbon cable, a stream that will not
start) is a failed retry, unsaid, not "back" then "lost" again every few seconds. A source whose
close hangs (libcamera after a frontend timeout) is abandoned after ``CLOSE_SECONDS``: the loss is
said first, and the pattern goes on.

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
from appliance.timing import backoff

log = logging.getLogger(__name__)

Opener = Callable[[], FrameSource]

# A source's close that has not returned by then is left to itself (in its own daemon thread).
CLOSE_SECONDS = 5.0


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
        self._unsaid = False  # the source was opened and has not delivered a frame yet
        self._failed_retries = 0  # since the camera was lost: each doubles the wait before the next
        self._source_lock = threading.Lock()  # the capture thread and close() both close the source

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
        """Open the real source; a failed ``retry`` is not news, the loss was published already.
        An opened source is said to be ready (or back) at its first frame (``_delivered``)."""
        try:
            source = self._opener()
        except Exception as e:  # CameraError, or a backend's own (see _run)
            if self._lost:  # said already: a dead camera is not "lost" anew at every call's start
                self._failed_retries += 1
            elif not retry:
                self._publish_lost(f"camera unavailable: {e}", e)
            self.active = "pattern"
            return
        with self._source_lock:
            self._source = source
        self.active, self._unsaid = source.name, True

    def _delivered(self, name: str) -> None:
        """A newly opened source's first frame: the camera is ready, or back after a loss (also
        after a pause: a camera lost in one call and back for the next must be said to be back)."""
        topic = "camera.recovered" if self._lost else "camera.ready"
        self._lost, self._unsaid, self._failed_retries = False, False, 0
        self._events.publish(topic, f"camera ready ({name})", backend=name)

    def _failed(self, error: Exception) -> float:
        """The source failed to read: the pattern, the loss said (unless this was a retry that
        opened but never delivered: the loss was said already), then the source closed. Returns
        the seconds until the next retry."""
        self.active = "pattern"
        if self._unsaid and self._lost:
            self._failed_retries += 1
        else:
            self._publish_lost(f"camera lost: {error}", error)
        self._unsaid = False
        self._close_source()  # after the news: a close that hangs must not hold it back
        return self._retry_delay()

    def _retry_delay(self) -> float:
        return backoff(self._failed_retries, first=self._retry)

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
            source = self._source
            if source is None:
                self._publish(self._fallback.read())
                # Not while paused: a camera retried after the call would be said to be back.
                if time.monotonic() >= next_retry and self._awake.is_set():
                    self._try_open(retry=True)
                    next_retry = time.monotonic() + self._retry_delay()
                continue
            try:
                frame = source.read()
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
                next_retry = time.monotonic() + self._failed(e)
                continue
            self._publish(frame)
            if self._unsaid:
                self._delivered(source.name)

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
        """Close the source (once, whoever asks first), waiting at most CLOSE_SECONDS for it."""
        with self._source_lock:
            source, self._source = self._source, None
        if source is None:
            return
        closer = threading.Thread(target=_close, args=(source,), name="camera-close", daemon=True)
        closer.start()
        closer.join(CLOSE_SECONDS)
        if closer.is_alive():
            log.error("closing the camera has not returned after %.0f s: left to itself", CLOSE_SECONDS)

    def close(self) -> None:
        self._stop.set()
        self._awake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._close_source()


def _close(source: FrameSource) -> None:
    try:
        source.close()
    except Exception as e:  # a failed close must not stop the capture
        log.warning("closing the camera failed: %s", e)
