"""The composition root: config, then backends, then services, in one readable order.

Everything started is registered on one ExitStack, so shutdown (SIGTERM/SIGINT) and every failure
path close it in reverse order.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack
from types import FrameType
from typing import Any

from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine
from appliance.camera import select
from appliance.camera.capture import Capture
from appliance.config import Config
from appliance.controls.button import CallButton, start_button
from appliance.display.select import open_display
from appliance.display.view import Display
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.speech.service import Speech
from appliance.state import StateStore
from appliance.vision.worker import VisionWorker
from appliance.web.api import create_app
from appliance.web.parts import build_parts
from appliance.web.server import WebServer

log = logging.getLogger(__name__)


class Appliance:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventBus()
        self._stack = ExitStack()
        self._stopped = threading.Event()
        self.capture: Capture | None = None
        self.vision: VisionWorker | None = None
        self.web: WebServer | None = None
        self.store: StateStore | None = None
        self.speech: Speech | None = None
        self.display: Display | None = None
        self.button: CallButton | None = None
        self.call: CallEngine | None = None

    def start(self) -> Appliance:
        """Start every part; on any failure close what already started and re-raise."""
        with self._stack as stack:
            cfg = self.config
            cfg.unit.data_dir.mkdir(parents=True, exist_ok=True)
            self.identity = Identity.load_or_create(cfg.unit.data_dir / "identity.key")
            defaults = {"display_name": cfg.unit.name}
            self.store = StateStore(cfg.unit.data_dir / "state.db", self.events, defaults)
            stack.callback(self.store.close)
            self.store.remember_identity(self.identity.unit_id)
            # Before the camera, so the start-up sentence hears what the camera and vision report.
            settings = self.store.settings().model_dump()
            card = cfg.vision.model_card
            self.speech = Speech(cfg.speech, self.events, cfg.unit.data_dir, settings, card)
            stack.callback(self.speech.close)
            self.display = open_display(cfg.display, self.events, cfg.unit.data_dir, settings, card)
            if self.display is not None:
                stack.callback(self.display.close)
            self.capture = Capture(
                select.opener(cfg.camera),
                self.events,
                retry_seconds=cfg.camera.retry_seconds,
                width=cfg.camera.width,
                height=cfg.camera.height,
                fps=cfg.camera.fps,
            ).start()
            stack.callback(self.capture.close)
            show = self.display.set_remote_frame if self.display else None
            self.call = CallEngine(
                cfg.call,
                self.identity,
                peers=self.store.peers,
                settings=self.store.settings,
                capture=self.capture,
                events=self.events,
                speaker=self.speech.speaker,
                on_remote_frame=show or (lambda _: None),  # display off: the call goes on unseen
            ).start()
            stack.callback(self.call.close)
            parts = build_parts(cfg.web, self.identity, self.store, self.events, call=self.call)
            stack.callback(parts.close)
            if parts.call is not None:
                store = self.store
                self.button = start_button(
                    cfg.button, parts.call, self.speech.announcer, lambda: [p.name for p in store.peers()]
                )
                if self.button is not None:
                    stack.callback(self.button.close)
            # After the parts, so speech and the call hear which backend runs (or that none can).
            self.vision = VisionWorker.open(cfg.vision, self.capture, self.events).start()
            stack.callback(self.vision.close)
            app = create_app(self.status, parts, [create_blueprint(self.call)])
            self.web = WebServer(app, cfg.web.host, cfg.web.port).start()
            stack.callback(self.web.close)
            parts.serve_on(self.web.port)
            self._stack = stack.pop_all()
        self.events.publish("unit.ready", f"{cfg.unit.name} is ready", name=cfg.unit.name)
        return self

    def status(self) -> dict[str, Any]:
        return {
            "name": self.store.settings().display_name if self.store else self.config.unit.name,
            "camera": self.capture.active if self.capture else "none",
            "vision": self.vision.status() if self.vision else {"available": False, "reason": "not started"},
            "call": self.call.state if self.call else "unavailable",
            "events": [{"topic": e.topic, "message": e.message} for e in self.events.recent()[-10:]],
        }

    def stop_on_signals(self) -> None:
        """SIGTERM/SIGINT end :meth:`wait`; installed before start() so an early signal is not lost."""

        def on_signal(signum: int, _: FrameType | None) -> None:
            log.info("signal %d: shutting down", signum)
            self._stopped.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    def wait(self) -> None:
        """Block until a signal (see :meth:`stop_on_signals`) or :meth:`stop`."""
        while not self._stopped.wait(1.0):
            pass

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self._stack.close()
