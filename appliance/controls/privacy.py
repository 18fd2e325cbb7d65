"""The button's privacy gestures, apart from its call gestures (``button.py``).

- In a call, two presses within ``double_seconds`` switch sharing of the user's expressions off
  (or on again); the unit says which ("Your expressions are no longer shared."). A press acts on
  its own (the other person's expression said again) once no second one came in that time.
- In idle, ``FORGET_HOLDS`` long presses in a row forget everything
  (``appliance.app.Appliance.forget_everything``), each after no more than ``window_seconds`` of
  silence since the one before: a person listens to each sentence (the address takes 6-8 s to say)
  before holding again, and holds with a pause between them start again. The first
  ``ADDRESS_HOLDS`` are the button's own (each says the unit's address: a person who missed it
  holds again to hear it again); after each further one but the last the unit says how many more
  it takes, so it never happens by accident or unannounced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from appliance.speech.announcer import Announcer

FORGET_HOLDS = 4
ADDRESS_HOLDS = 2


class PrivacyGestures:
    def __init__(
        self,
        announcer: Announcer,
        *,
        sharing: Callable[[], bool],
        set_sharing: Callable[[bool], object],
        forget: Callable[[], object],
        double_seconds: float = 0.8,
        window_seconds: float = 15.0,
    ) -> None:
        self._announcer, self._forget = announcer, forget
        self._sharing, self._set_sharing = sharing, set_sharing
        self._double, self._window = double_seconds, window_seconds
        self._clock = announcer.clock  # longest_silence's
        self._lock = threading.Lock()
        self._single: threading.Timer | None = None  # a press in a call waiting for a second
        self._holds = 0  # long presses in a row
        self._last_hold = -float("inf")

    def press_in_call(self, single: Callable[[], object]) -> None:
        """A short press in a call: ``single`` runs once no second press came within
        ``double_seconds``; a second press switches sharing instead. The first press of a double
        press used to say the expression again before the switch was said."""
        with self._lock:
            first, self._single = self._single, None
            if first is None:
                self._single = threading.Timer(self._double, self._alone, (single,))
                self._single.daemon = True
                self._single.start()
        if first is not None:
            first.cancel()
            # settings.changed follows: the call tells the other unit, the narrator says it here.
            self._set_sharing(not self._sharing())

    def close(self) -> None:
        """No press waiting for a second acts any more."""
        with self._lock:
            waiting, self._single = self._single, None
        if waiting is not None:
            waiting.cancel()

    def _alone(self, single: Callable[[], object]) -> None:
        with self._lock:
            if self._single is None or self._single is not threading.current_thread():
                return  # a second press came as the timer fired: it is a double press
            self._single = None
        single()

    def hold_in_idle(self) -> bool:
        """A long press in idle: one step towards forgetting everything; False for the first
        ADDRESS_HOLDS steps (the button does what a long press does), True when this one was said or
        done here."""
        now = self._clock()
        with self._lock:
            silent = self._announcer.longest_silence(self._last_hold)
            self._holds = self._holds + 1 if silent <= self._window else 1
            self._last_hold = now
            left = FORGET_HOLDS - self._holds
            if left <= 0:
                self._holds = 0
        if left >= FORGET_HOLDS - ADDRESS_HOLDS:
            return False
        if left > 0:
            self._announcer.state("forget_hold", count=left)
        else:
            self._forget()
        return True
