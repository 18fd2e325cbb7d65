"""Owner presence by the unit's button: the alternative to typing the code the unit says.

A browser that asks for the owner code (``POST /api/owner/code`` or the login page) also waits, for
``ttl_s``, for a press of the unit's button; the unit, idle, takes its next short press as "I am
here" and the browser that asked gets the owner session at its next ``POST /api/owner/button`` (the
page's "I pressed the button"). Someone on the LAN could ask at the same moment to catch the owner's press,
so a press while two browsers wait confirms neither: both are told to type the code instead. And
anyone on the LAN could ask while the owner is about to press for a call: so the unit says, after the
code, that a press would let a web page in (``owner.waiting``), and says so when one was let in
(``owner.present``). Only while the unit is idle: in a call a press answers, repeats or hangs up,
so a page asking then is offered the code alone, and a call beginning ends every wait (the owner's
first press after the call, to call back, was taken for a page that had asked meanwhile).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Literal

from flask import session

from appliance.events import Event, EventBus

log = logging.getLogger(__name__)

Answer = Literal["present", "waiting", "contested", "expired"]
SESSION_KEY = "presence"  # the browser's token for its wait, in its session cookie
NOT_YET: dict[Answer, str] = {
    "waiting": "the unit's button has not been pressed yet: press it, then continue (or type the code)",
    "contested": "two pages asked at once, so the button let nobody in: type the code the unit says",
    "expired": "the unit is not waiting for its button: ask the unit for a code first",
}


class ButtonPresence:
    def __init__(
        self,
        events: EventBus | None = None,
        ttl_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events, self._ttl_s, self._clock = events, ttl_s, clock
        self._lock = threading.Lock()
        self._waiting: dict[str, float] = {}  # browser token -> when its wait ends
        self._present: dict[str, float] = {}  # browser token confirmed by a press -> until when
        self._contested: dict[str, float] = {}  # browsers that waited together when it was pressed
        self.has_button = False  # set while the unit's button works (appliance/controls/button.py)
        self._idle = True  # no call in progress or closing (call.state)
        if events is not None:
            events.subscribe(self._on_event)

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(16)

    def ask(self, token: str) -> bool:
        """The browser with ``token`` waits for a press (replacing its own earlier wait); False, and
        no wait, while a call is in progress."""
        with self._lock:
            self._expire()
            if not self._idle:
                return False
            self._waiting[token] = self._clock() + self._ttl_s
            self._present.pop(token, None)
            self._contested.pop(token, None)
            # Under the lock: a call beginning in between would end the wait after the owner was
            # told that a press lets the page in (this class's own subscriber returns at once).
            self._publish("owner.waiting", "A web page waits for the button")
        return True

    def _on_event(self, event: Event) -> None:
        if event.topic != "call.state":
            return
        with self._lock:
            self._idle = event.data.get("state") == "idle"
            if not self._idle and self._waiting:
                log.info(
                    "a call began: the %d page(s) waiting for the button must ask again", len(self._waiting)
                )
                self._waiting.clear()

    def press(self) -> bool:
        """The button was pressed: True when a browser was waiting (the press is taken for that)."""
        with self._lock:
            self._expire()
            if not self._waiting:
                return False
            waiting, self._waiting = self._waiting, {}
            (self._present if len(waiting) == 1 else self._contested).update(waiting)
        if len(waiting) == 1:
            log.info("owner presence shown by the button")
            self._publish("owner.present", "The owner pressed the button: the page may go on")
        else:
            log.warning("button pressed while %d browsers waited: none is let in", len(waiting))
            self._publish("owner.contested", "Two pages asked at once: type the code instead")
        return True

    def answer(self, token: str, spend: bool = True) -> Answer:
        """Whether the press this browser waited for came; "present" is answered once (``spend``)."""
        with self._lock:
            self._expire()
            if token in self._present:
                if spend:
                    del self._present[token]
                return "present"
            if token in self._waiting:
                return "waiting"
            if token in self._contested:
                return "contested"
            return "expired"

    def _expire(self) -> None:
        now = self._clock()
        self._waiting = {t: until for t, until in self._waiting.items() if until > now}
        self._present = {t: until for t, until in self._present.items() if until > now}
        self._contested = {t: until for t, until in self._contested.items() if until > now}

    def _publish(self, topic: str, message: str) -> None:
        if self._events is not None:
            self._events.publish(topic, message)


def ask_for_button(presence: ButtonPresence) -> list[str]:
    """This browser asked for the owner code: it waits for the button too, where there is one.

    Returns what the unit now waits for from this browser: ``["code"]`` or ``["code", "button"]``.
    """
    if not presence.has_button:
        return ["code"]
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = session[SESSION_KEY] = ButtonPresence.new_token()
    return ["code", "button"] if presence.ask(token) else ["code"]


def button_answer(presence: ButtonPresence, spend: bool = True) -> Answer:
    """Whether the press this browser waits for came (the caller then grants the owner session)."""
    token = session.get(SESSION_KEY)
    return presence.answer(token, spend) if isinstance(token, str) else "expired"
