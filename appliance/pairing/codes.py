"""One-time 6-digit codes the unit shows and says, with expiry and a lockout after wrong guesses.

Used for pairing (the code the other unit's page must type) and for owner presence (the code a
browser must type to prove someone stands at the unit). Each guard holds at most one live code.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Literal, NoReturn

from appliance.events import EventBus

log = logging.getLogger(__name__)

Purpose = Literal["pair", "owner"]


class CodeError(Exception):
    """A code cannot be used now; the message says what to do."""


class CodeLocked(CodeError):
    def __init__(self, seconds: int) -> None:
        super().__init__(f"too many wrong codes: try again in {seconds} seconds")
        self.seconds = seconds


class CodeExpired(CodeError):
    def __init__(self) -> None:
        super().__init__("the code has expired or was never asked for: ask the unit for a new code")


class CodeGuard:
    def __init__(
        self,
        events: EventBus,
        purpose: Purpose,
        *,
        ttl_s: float = 120,
        max_wrong: int = 5,
        lock_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self.purpose: Purpose = purpose
        self._ttl_s = ttl_s
        self._max_wrong = max_wrong
        self._lock_s = lock_s
        self._clock = clock
        self._mutex = threading.Lock()
        self._code: str | None = None
        self._expires = 0.0
        self._wrong = 0
        self._locked_until = 0.0

    def issue(self) -> str:
        """A fresh code, published as ``pairing.code`` for the display and the speech part."""
        with self._mutex:
            self._refuse_if_locked()
            self._code = f"{secrets.randbelow(10**6):06d}"
            self._expires = self._clock() + self._ttl_s
            code = self._code
        what = "pairing" if self.purpose == "pair" else "owner"
        # The digits go in the event's data only (for the display and speech): messages are logged
        # and listed by /api/status, and codes are secrets.
        self._events.publish(
            "pairing.code", f"New {what} code on the display", code=code, purpose=self.purpose
        )
        return code

    def current(self) -> str:
        """The live code; raises CodeLocked or CodeExpired."""
        with self._mutex:
            self._refuse_if_locked()
            if self._code is None or self._clock() > self._expires:
                self._code = None
                raise CodeExpired()
            return self._code

    def check(self, guess: str) -> None:
        """Accept ``guess`` once (the code is then spent), or count it as wrong and raise."""
        code = self.current()
        if hmac.compare_digest(code.encode(), guess.strip().encode()):
            self.succeeded()
        else:
            self.failed()

    def succeeded(self) -> None:
        with self._mutex:
            self._code = None
            self._wrong = 0

    def failed(self) -> NoReturn:
        """Count a wrong code; raises CodeError (CodeLocked on the last allowed one)."""
        with self._mutex:
            self._wrong += 1
            left = self._max_wrong - self._wrong
            if left > 0:
                raise CodeError(f"wrong code: {left} {'try' if left == 1 else 'tries'} left")
            self._code = None
            self._wrong = 0
            self._locked_until = self._clock() + self._lock_s
        seconds = round(self._lock_s)
        self._events.publish(
            "pairing.locked",
            f"Too many wrong codes. {'Pairing' if self.purpose == 'pair' else 'Settings'} "
            f"locked for {_spoken_duration(seconds)}.",
            seconds=seconds,
            purpose=self.purpose,
        )
        raise CodeLocked(seconds)

    def _refuse_if_locked(self) -> None:
        left = self._locked_until - self._clock()
        if left > 0:
            raise CodeLocked(max(1, round(left)))


def _spoken_duration(seconds: int) -> str:
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
