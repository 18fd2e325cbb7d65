"""Keeps the scene up to date from events and the remote video, and redraws it in its own thread.

Events and frames arrive in other threads (the bus, the call's loop); they only update the scene
under a lock. The drawing thread redraws at most ``fps`` times a second and only when something
changed; the newest remote frame wins.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from appliance.call import CALL_OVER
from appliance.display import Screen
from appliance.display.fonts import for_language
from appliance.display.layout import GREY, YELLOW, Scene, draw
from appliance.events import Event, EventBus
from appliance.words.phrases import Phrases, call_key, for_settings, relay_key, repair_key, sharing_key

log = logging.getLogger(__name__)

# topic -> (the part, the phrase saying it does not work, or "" when it works again; or the function
# of the event's data that names the phrase, as speech does). Shown until it works again: the owner
# heard it once (or not at all, with the speaker broken); a helper reads it.
FAULTS: dict[str, tuple[str, str | Callable[[Mapping[str, Any]], str]]] = {
    "audio.unavailable": ("speaker", "speaker_unavailable"),
    "audio.recovered": ("speaker", ""),
    "camera.lost": ("camera", "camera_lost"),
    "camera.recovered": ("camera", ""),
    "vision.unavailable": ("vision", "vision_unavailable"),
    "vision.backend": ("vision", ""),
    "relay.unreachable": ("relay", relay_key),  # a refused or taken account: why, not "right now"
    "relay.back": ("relay", ""),
    "unit.card_read_only": ("card", "card_read_only"),
    # Shown until the next start, for whoever helps; beside a read-only card's line, not in its place.
    "unit.state_repaired": ("state", repair_key),
    "unit.identity_changed": ("key", "key_changed"),
    "microphone.unavailable": ("microphone", "microphone_unavailable"),
    "microphone.recovered": ("microphone", ""),
    "button.unavailable": ("button", "button_unavailable"),
}
SAID_S = 10.0  # how long "Paired with Asha." stays before the idle line (with the address) is back


class Display:
    def __init__(
        self,
        screen: Screen,
        events: EventBus,
        phrases: Phrases,
        *,
        unit_name: str = "emocall",
        fps: float = 10.0,
        font: Path | None = None,
    ) -> None:
        self._screen, self._font = screen, font
        self._fonts, self._phrases = for_language(phrases, font)
        self._period = 1.0 / fps
        self._lock = threading.Condition()
        self._version = self._shown = 0  # scene changes made / drawn and shown
        # Not "Ready" until the unit says so: a start that fails (and is restarted) would show it.
        self._scene = Scene(unit_name=unit_name, state=self._phrases.say("starting"))
        self._dirty = threading.Event()
        self._dirty.set()
        self._stop = threading.Event()
        self._address = ""  # host:port, in the idle line so another unit's owner can pair by address
        self._timer: threading.Timer | None = None  # puts a passing message back to the idle line
        # Each live code's state line, by purpose (owner, pair): one used takes its own line off.
        self._code_lines: dict[str, str] = {}
        self._call_state = ""  # the last call.state ("" before the first)
        self._call_line = ""  # the state line of the call in progress; "" when there is none
        self._faults: dict[str, str] = {}  # part -> the phrase key saying it does not work
        # The other person's expression (or why there is none) in the call in progress: a passing
        # message (a code, "Paired with Bela.") puts it back when it ends.
        self._call_big: tuple[str, tuple[int, int, int]] = ("", YELLOW)
        self._handlers: dict[str, Callable[[Event], None]] = {
            "unit.ready": self._on_ready,
            "unit.address": self._on_ready,
            "unit.address_changed": self._on_ready,
            "call.state": self._on_call,
            "remote.emotion": lambda e: self._show_big(self._phrases.word(str(e.data["emotion"])), YELLOW),
            "remote.no_face": lambda e: self._show_big(self._phrases.say("remote_no_face"), GREY),
            "remote.sharing": self._on_sharing,
            "pairing.code": self._on_code,
            "pairing.code_used": lambda e: self._clear_code(str(e.data.get("purpose"))),
            "pairing.done": lambda e: self._show_for(
                SAID_S, self._phrases.say("paired", peer=str(e.data.get("peer", ""))), big=""
            ),
            "pairing.removed": lambda e: self._show_for(
                SAID_S, self._phrases.say("unpaired", peer=str(e.data.get("peer", "")))
            ),
            "pairing.locked": self._on_locked,
            "settings.changed": self._on_settings,
        }
        with self._lock:  # a fault said before the display opened (the speaker's, at start-up)
            self._unsubscribe = events.subscribe(self._on_event)
            for event in events.recent():
                if event.topic in FAULTS:
                    self._on_fault(event)
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    def set_remote_frame(self, image: np.ndarray) -> None:
        """The newest remote video frame (BGR); called from the call's thread, never blocks long.
        One decoded as the call's connection closes comes after the call is over: not shown."""
        with self._lock:
            if self._call_state not in CALL_OVER:
                self._update(frame=image)

    @property
    def scene(self) -> Scene:
        with self._lock:
            return self._scene

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._scene = dataclasses.replace(self._scene, **changes)
            self._version += 1
        self._dirty.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every change made so far is on the screen; False on timeout."""
        with self._lock:
            target = self._version
            return self._lock.wait_for(lambda: self._shown >= target, timeout)

    def _on_event(self, event: Event) -> None:
        handler = self._handlers.get(event.topic)
        if handler is not None:
            handler(event)
        elif event.topic in FAULTS:
            self._on_fault(event)

    def _on_fault(self, event: Event) -> None:
        part, phrase = FAULTS[event.topic]
        key = phrase if isinstance(phrase, str) else phrase(event.data)
        with self._lock:
            if key:
                self._faults[part] = key
            else:
                self._faults.pop(part, None)
            self._update(faults=self._faults_line())

    def _faults_line(self) -> str:
        return " ".join(self._phrases.say(key) for key in self._faults.values())

    def _on_call(self, event: Event) -> None:
        data = event.data
        state = str(data.get("state", ""))
        key = call_key(data)
        text = self._phrases.say(key, peer=str(data.get("peer") or "")) if key else self._idle()
        with self._lock:
            self._call_state = state
            began = not self._call_line  # a call begins: idle's passing message (a code) ends
            self._call_line = "" if state in CALL_OVER else text
            if state in CALL_OVER:
                self._call_big = ("", YELLOW)
            passing = self._timer is not None and self._timer.is_alive()
        if state == "idle":
            # A call's last words ("Missed call from Asha.") or a code stay until their time is up.
            if not passing:
                self._update(state=text, big="", frame=None)
        elif state in CALL_OVER:
            self._show_for(SAID_S, text, big="", frame=None)
        elif began:
            # The call's line takes over from a passing message shown before it (a code, whose
            # expiry would no longer find it shown). In a call, one asked for then (the owner reads
            # the digits) stays through a blip: its end brings back the call's line.
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            self._update(state=text, big="")
        elif not passing:
            self._update(state=text)
        # Else a code asked for in the call is on screen: it stays, and its end shows the call's
        # line as it is then.

    def _on_sharing(self, event: Event) -> None:
        key = sharing_key(event.data)
        if key in ("sharing_resumed", "remote_available"):
            self._show_big("", YELLOW)
        else:  # paused, or their expressions cannot be described
            self._show_big(self._phrases.say(key, peer=str(event.data.get("peer") or "")), GREY)

    def _show_big(self, text: str, colour: tuple[int, int, int]) -> None:
        """The other person's expression, or why there is none, in large type."""
        with self._lock:
            if self._call_state in CALL_OVER:
                return  # a guest's face analysed as the call ended (its own thread)
            self._call_big = (text, colour)
            if self._scene.state not in self._code_lines.values():
                # Else a code holds the large type (the owner reads its digits); its end brings this back.
                self._update(big=text, big_colour=colour)

    def _idle(self) -> str:
        if self._address:
            return self._phrases.say("idle_address", address=self._address)
        return self._phrases.say("idle")

    def _on_ready(self, event: Event) -> None:
        """The unit's name and address (at start-up, and again when the owner asks for the address)."""
        with self._lock:
            was_idle = self._scene.state in (self._idle(), self._phrases.say("starting"))
            self._address = str(event.data.get("address") or self._address)
            changes: dict[str, Any] = {"unit_name": str(event.data.get("name") or self._scene.unit_name)}
            if was_idle:
                changes["state"] = self._idle()
        self._update(**changes)

    def _on_code(self, event: Event) -> None:
        code, seconds = str(event.data["code"]), float(event.data.get("seconds", 0))
        purpose = str(event.data.get("purpose"))
        line = self._phrases.code(purpose, code, seconds)
        with self._lock:
            self._code_lines[purpose] = line
        # An expired code is useless: off the screen with it.
        self._show_for(seconds or None, line, big=code, big_colour=YELLOW)

    def _clear_code(self, purpose: str) -> None:
        """A code was used: off the screen with it, back to the idle line (if it is still shown).
        Another purpose's code shown now stays: it still works."""
        with self._lock:
            line = self._code_lines.pop(purpose, None)
        if line is not None:
            self._back_to_idle(line)

    def _on_locked(self, event: Event) -> None:
        seconds = float(event.data["seconds"])
        text = self._phrases.locked(str(event.data.get("purpose")), seconds)
        with self._lock:
            in_call = bool(self._call_line)
        if in_call:  # said, then the call's line and expression again: not hidden for the lock's minutes
            self._show_for(SAID_S, text)
        else:
            self._show_for(seconds, text, big="")

    def _show_for(self, seconds: float | None, state: str, **changes: Any) -> None:
        """Show ``state`` and go back to the idle line (with the address) after ``seconds``, unless
        something else was shown meanwhile; ``None`` keeps it until then."""
        self._update(state=state, **changes)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if seconds is not None:
                self._timer = threading.Timer(seconds, self._back_to_idle, args=(state,))
                self._timer.daemon = True
                self._timer.start()

    def _back_to_idle(self, state: str) -> None:
        """The passing message ``state`` ends: back to the call's line in a call, with the other
        person's expression, else to the idle line."""
        with self._lock:
            if self._scene.state != state:
                return
            self._code_lines = {k: v for k, v in self._code_lines.items() if v != state}  # expired
            if self._call_line:
                big, colour = self._call_big
                self._update(state=self._call_line, big=big, big_colour=colour)
            else:
                self._update(state=self._idle(), big="", frame=None)

    def _on_settings(self, event: Event) -> None:
        settings = event.data.get("settings")
        if isinstance(settings, Mapping):
            fonts, phrases = for_language(for_settings(settings, self._phrases.labels), self._font)
            with self._lock:  # one step: an event in between must not be overwritten by the idle line
                was_idle = self._scene.state == self._idle()
                self._fonts, self._phrases = fonts, phrases
                # The idle line in the new language; a line of a call or a code stays as it was
                # (the fonts still have its letters) until the next event replaces it.
                name = str(settings.get("display_name") or self._scene.unit_name)
                self._update(
                    unit_name=name,
                    faults=self._faults_line(),
                    **({"state": self._idle()} if was_idle else {}),
                )

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._dirty.wait(0.5):
                continue
            self._dirty.clear()
            with self._lock:
                scene, version, fonts = self._scene, self._version, self._fonts
            try:
                text = "\n".join(
                    line for line in (scene.unit_name, scene.state, scene.faults, scene.big) if line
                )
                self._screen.show(draw(scene, self._screen.size, fonts), text)
            except Exception:  # a broken screen must not stop the call; logged, tried again next change
                log.exception("the %s display failed to show a picture", self._screen.name)
            with self._lock:
                self._shown = version
                self._lock.notify_all()
            self._stop.wait(self._period)

    def close(self) -> None:
        self._unsubscribe()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        self._stop.set()
        self._dirty.set()
        self._thread.join(timeout=5)
        self._screen.close()
