"""The guest's face, described to the owner: the guest's incoming video through the unit's vision pipeline.

A unit describes its own owner's face and sends the result; a guest's browser runs no model, so the
unit analyses the guest's video itself, with the pipeline the camera uses (detection, tracking,
classification, smoothing; :class:`~appliance.vision.worker.VisionWorker` on the newest frame, at
``analyse_fps``), and publishes what it finds as ``remote.emotion`` / ``remote.no_face`` with the
guest's name: the path a remote unit's expressions take to speech and the display. The worker
publishes on a bus of its own, so the guest's expressions are never taken for the owner's (which
are sent to the other side), and it runs only while a guest call is connected and the guest agreed.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from appliance.call import UNAVAILABLE
from appliance.call.media import FrameSink
from appliance.camera import Frame
from appliance.config import VisionConfig
from appliance.events import Event, EventBus
from appliance.vision.worker import VisionWorker

log = logging.getLogger(__name__)


class LatestFrame:
    """The newest frame of the guest's video (a :class:`~appliance.vision.worker.FrameFeed`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._start = time.monotonic()
        self.ended = False

    def put(self, image: np.ndarray) -> None:
        with self._cond:
            index = self._frame.index + 1 if self._frame else 0
            self._frame = Frame(image, index, time.monotonic() - self._start)
            self._cond.notify_all()

    def wait_newer(self, index: int, timeout: float) -> Frame | None:
        with self._cond:
            self._cond.wait_for(
                lambda: self.ended or (self._frame is not None and self._frame.index > index), timeout
            )
            frame = self._frame
        return frame if frame is not None and frame.index > index and not self.ended else None

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()


class GuestVision:
    """Analyses the guest's video during a guest call; :meth:`tap` wraps the remote video's sink."""

    def __init__(self, cfg: VisionConfig, events: EventBus) -> None:
        self._cfg, self._events = cfg, events
        self._lock = threading.Lock()
        self._feed: LatestFrame | None = None
        self._worker: VisionWorker | None = None
        self._unavailable = False  # the owner was told the guest's face cannot be described now

    def tap(self, sink: FrameSink | None) -> FrameSink:
        """``sink`` (None: no display), and the guest's frames to the analysis while it runs."""

        def both(image: np.ndarray) -> None:
            feed = self._feed
            if feed is not None:
                feed.put(image)
            if sink is not None:
                sink(image)

        return both

    def start(self, name: str) -> None:
        """Describe ``name``'s face from now on; the model loads in a thread, off the call's loop."""
        with self._lock:
            if self._feed is not None:
                return
            self._feed = LatestFrame()
            self._unavailable = False
        threading.Thread(target=self._open, args=(self._feed, name), name="guest-vision", daemon=True).start()

    def _open(self, feed: LatestFrame, name: str) -> None:
        own = EventBus()
        own.subscribe(lambda e: self._forward(e, name, feed))
        worker = VisionWorker.open(self._cfg, feed, own)
        with self._lock:
            if self._feed is not feed:  # the call ended while the model loaded
                worker.close()
                return
            self._worker = worker.start()
        log.info("describing the guest's face: %s", worker.status())

    def _forward(self, event: Event, name: str, feed: LatestFrame) -> None:
        if self._feed is not feed:
            return  # stopped: an analysis that finishes after the call's end is not said or shown
        if event.topic == "vision.emotion":
            emotion = str(event.data["emotion"])
            self._events.publish(
                "remote.emotion",
                f"{name}: {emotion}",
                peer=name,
                emotion=emotion,
                confidence=float(event.data.get("confidence", 0.0)),
                guest=True,
            )
        elif event.topic == "vision.no_face":
            self._events.publish("remote.no_face", f"{name}: no face in view", peer=name, guest=True)
        elif event.topic == "vision.unavailable":
            log.warning("the guest's face cannot be described: %s", event.data.get("reason"))
            self._tell_unavailable(name, True)
        elif event.topic == "vision.backend":
            self._tell_unavailable(name, False)

    def _tell_unavailable(self, name: str, unavailable: bool) -> None:
        """The owner hears that the guest's face cannot be described (or can again), as a unit's
        expressions that cannot be; only on a change: the pipeline's first opening is no news."""
        if unavailable == self._unavailable:
            return
        self._unavailable = unavailable
        self._events.publish(
            "remote.sharing",
            f"{name}'s face {'cannot' if unavailable else 'can'} be described",
            peer=name,
            paused=unavailable,
            reason=UNAVAILABLE,
            guest=True,
        )

    def stop(self, wait: bool = False) -> None:
        """Stop describing; the worker closes in a thread unless ``wait`` (never on the call's loop)."""
        with self._lock:
            feed, worker = self._feed, self._worker
            self._feed = self._worker = None
        if feed is not None:
            feed.end()
        if worker is not None and wait:
            worker.close()
        elif worker is not None:
            threading.Thread(target=worker.close, name="guest-vision-close", daemon=True).start()

    def close(self) -> None:
        self.stop(wait=True)
