"""Runs the vision pipeline in its own thread, off the media path, always on the newest frame.

It takes frames from a :class:`FrameFeed` (the shared :class:`~appliance.camera.capture.Capture`,
or :class:`FileFeed` for offline analysis), analyses at most ``analyse_fps`` of them per second of
source time and publishes ``vision.emotion``, ``vision.no_face`` and ``vision.face_back``. When the
model cannot be loaded, it publishes ``vision.unavailable`` and the unit carries on. When an analysis
fails (a USB glitch of the Coral), it publishes ``vision.unavailable``, closes the pipeline and opens
it again after a backoff (which publishes ``vision.backend``); it gives up after ``MAX_FAILURES``
failures in a row. An analysis that does not return (a hung Coral) is said the same way after
``STUCK_SECONDS``, by a watchdog thread.

The appliance keeps it paused (:meth:`VisionWorker.pause`) except while a call is connected and the
owner shares expressions: no face is analysed otherwise. ``emocall watch`` runs it unpaused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from appliance.camera import EndOfStream, Frame, FrameSource
from appliance.config import VisionConfig
from appliance.events import EventBus
from appliance.timing import backoff
from appliance.vision import VisionError
from appliance.vision.pipeline import VisionEvent, VisionPipeline
from appliance.vision.select import open_pipeline

log = logging.getLogger(__name__)

# Failed analyses or reopenings in a row before the worker stops trying: a model that fails every time
# would otherwise be reloaded forever.
MAX_FAILURES = 5
# An analysis takes milliseconds; one that has not returned after this long is stuck in the backend
# (a USB Coral that stopped answering holds its invoke() for good) and is said as such.
STUCK_SECONDS = 10.0


class FrameFeed(Protocol):
    ended: bool

    def wait_newer(self, index: int, timeout: float) -> Frame | None: ...


class FileFeed:
    """Every frame of a source in order, as fast as it decodes: for ``emocall watch`` on a file."""

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self.ended = False

    def wait_newer(self, index: int, timeout: float) -> Frame | None:
        try:
            return self._source.read()
        except EndOfStream:
            self.ended = True
            return None

    def close(self) -> None:
        self._source.close()


class VisionWorker:
    def __init__(
        self,
        feed: FrameFeed,
        pipeline: VisionPipeline | None,
        events: EventBus,
        analyse_fps: float = 10.0,
        *,
        paused: bool = False,
        opener: Callable[[str], VisionPipeline] | None = None,
    ) -> None:
        self._feed, self.pipeline, self._events = feed, pipeline, events
        # Opens a new pipeline after one failed, given why the Edge TPU is not to be used (or "");
        # None: a failure is final.
        self._opener = opener
        self._edgetpu_failed = ""  # the Edge TPU failed again as soon as it was opened anew
        self._failures = 0  # failed analyses or reopenings since the last analysis that worked
        self._period = 1.0 / analyse_fps
        self._last = self._due = float("-inf")  # source time of the last analysed frame, of the next
        self._stop = threading.Event()
        self._running = threading.Event()  # set while frames may be analysed
        if not paused:
            self._running.set()
        self._thread = threading.Thread(target=self._run, name="vision", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="vision-watchdog", daemon=True)
        self._analysing_since: float | None = None  # time.monotonic() when the analysis in progress began
        self.unavailable: str | None = None if pipeline else "not started"
        self.busy_seconds = 0.0  # time spent in the pipeline, for the analysis rate it could sustain
        self._reset = False  # forget the face before the next frame (set when analysis resumes)

    @classmethod
    def open(
        cls, cfg: VisionConfig, feed: FrameFeed, events: EventBus, *, paused: bool = False
    ) -> VisionWorker:
        """A worker for ``cfg``; without a usable model it reports "emotions unavailable" and idles."""
        try:
            pipeline = open_pipeline(cfg, events) if cfg.enabled else None
        except VisionError as e:
            worker = cls(feed, None, events, cfg.analyse_fps, paused=paused)
            worker._report_unavailable(str(e))
            return worker
        worker = cls(
            feed,
            pipeline,
            events,
            cfg.analyse_fps,
            paused=paused,
            opener=lambda edgetpu_failed: open_pipeline(cfg, events, edgetpu_failed),
        )
        if not cfg.enabled:
            # Said like any other reason (and it makes the consent at connect say "not shared").
            worker.unavailable = "turned off (vision.enabled = false)"
            reason = worker.unavailable
            events.publish("vision.unavailable", f"emotions unavailable: {reason}", reason=reason)
        return worker

    def start(self) -> VisionWorker:
        if self.pipeline is not None:
            self._thread.start()
            self._watchdog.start()
        return self

    def pause(self) -> None:
        """Stop analysing (the frame in progress finishes); the camera's frames are left unread."""
        self._running.clear()

    def resume(self) -> None:
        """Analyse again, from a clean slate: the face and expression seen before are forgotten."""
        if not self._running.is_set():
            self._reset = True
            self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def status(self) -> dict[str, Any]:
        if self.pipeline is None or self.unavailable:
            return {"available": False, "reason": self.unavailable}
        return {"available": True, **self.pipeline.backends, "reasons": self.pipeline.reasons}

    @property
    def fps(self) -> float:
        frames = self.pipeline.frames if self.pipeline else 0
        return frames / self.busy_seconds if self.busy_seconds else 0.0

    def join(self, timeout: float | None = None) -> None:
        """Wait for the feed to end (a file); returns at once if the worker never started."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _report_unavailable(self, reason: str) -> None:
        self.unavailable = reason
        log.error("emotions unavailable: %s", reason)
        self._events.publish("vision.unavailable", f"emotions unavailable: {reason}", reason=reason)

    def _run(self) -> None:
        assert self.pipeline is not None
        index = -1
        while not self._stop.is_set():
            # close() wakes a paused worker only to end it: no frame is analysed on the way out.
            if not self._running.wait(timeout=0.5) or self._stop.is_set():
                continue
            if self._reset:
                self._reset = False
                self.pipeline.reset()
            frame = self._feed.wait_newer(index, timeout=0.5)
            if frame is None:
                if self._feed.ended:
                    return
                continue
            index = frame.index
            if self._stop.is_set() or not self._running.is_set() or not self._is_due(frame.position):
                continue
            try:
                self._analyse(frame)
                if self.unavailable is not None:  # it came back after the watchdog said it stuck
                    raise VisionError("an analysis was stuck in the backend")
            except Exception as e:
                # The call must go on whatever the model does: say so loudly and open it again.
                log.exception("vision pipeline failed")
                if not self._reopen(f"the expression pipeline failed: {e}"):
                    return
            else:
                self._failures = 0

    def _watch(self) -> None:
        """Say an analysis stuck in the backend: nothing can stop a call into a driver, but the unit
        and the other one hear that expressions are gone instead of silence. The analysis that comes
        back at last is taken as failed, and the pipeline opened again."""
        while not self._stop.wait(1.0):
            started = self._analysing_since
            if (
                started is not None
                and self.unavailable is None
                and time.monotonic() - started > STUCK_SECONDS
            ):
                self._report_unavailable(
                    f"an analysis has not returned for {STUCK_SECONDS:g} s: the Edge TPU stopped answering?"
                )

    def _reopen(self, reason: str) -> bool:
        """Close the failed pipeline and open a new one after a backoff; False when it gives up."""
        assert self.pipeline is not None
        self.pipeline.close()
        if self.unavailable is None:  # else already said (an analysis the watchdog found stuck)
            self._report_unavailable(reason)
        if self._failures and "edgetpu" in self.pipeline.backends.values():
            # Failed again before any analysis worked on the Edge TPU opened anew (a Coral still
            # plugged in whose every invoke fails): the processor, for the rest of this run, rather
            # than reopening it until the worker gives up.
            self._edgetpu_failed = reason
        while self._opener is not None:
            self._failures += 1
            if self._failures >= MAX_FAILURES:
                self.unavailable = f"{reason} ({self._failures} failures in a row: restart the unit)"
                log.error("emotions stay unavailable: %s", self.unavailable)
                return False
            if self._stop.wait(backoff(self._failures - 1)):
                return False
            try:
                pipeline = self._opener(self._edgetpu_failed)  # publishes vision.backend
            except Exception as e:  # whatever the backend raises, the next try may work
                log.warning("the expression pipeline cannot be opened again: %s", e)
                reason = self.unavailable = f"the expression pipeline cannot be opened again: {e}"
                continue
            if self._stop.is_set():
                # Closed while it opened (a Coral's probe takes up to 30 s, longer than close()
                # waits): close() has closed the failed one; this one would hold the Coral.
                pipeline.close()
                return False
            self.pipeline = pipeline
            self.unavailable = None
            return True
        return False

    def _is_due(self, position: float) -> bool:
        """Keeps a steady ``analyse_fps`` grid in source time (a camera faster than it skips frames)."""
        if self._last <= position < self._due - 1e-3:
            return False
        behind = position - self._due >= self._period or position < self._last
        self._due = position + self._period if behind else self._due + self._period
        self._last = position
        return True

    def _analyse(self, frame: Frame) -> None:
        assert self.pipeline is not None
        start = self._analysing_since = time.monotonic()
        try:
            events = self.pipeline.process(frame.image, frame.position)
        finally:
            self._analysing_since = None
        self.busy_seconds += time.monotonic() - start
        if self._stop.is_set() or not self._running.is_set():
            return  # paused or closed meanwhile (the call ended): what this frame showed is news for nobody
        for event in events:
            self._publish(event)

    def _publish(self, e: VisionEvent) -> None:
        if e.kind == "emotion":
            self._events.publish(
                "vision.emotion",
                f"expression: {e.emotion} ({e.confidence:.0%})",
                emotion=e.emotion,
                confidence=round(e.confidence, 3),
                since=round(e.since, 3),
                t=round(e.t, 3),
            )
        elif e.kind == "no_face":
            self._events.publish("vision.no_face", "no face in view", t=round(e.t, 3))
        else:
            self._events.publish("vision.face_back", "face in view again", t=round(e.t, 3))

    def close(self) -> None:
        self._stop.set()
        self._running.set()  # a paused worker wakes up to see the stop
        for thread in (self._thread, self._watchdog):
            if thread.is_alive():
                thread.join(timeout=5)
        if self.pipeline is not None:
            self.pipeline.close()
