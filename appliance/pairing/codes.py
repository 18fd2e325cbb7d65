"""One-time 6-digit codes the unit shows and says, with expiry and limits per source address.

Used for pairing (the code the other unit's page must type) and for owner presence (the code a
browser must type to prove someone stands at the unit). Each guard holds at most one live code, and
asking again while it lives gets the same code (said again at most every ``repeat_s``): nobody can
replace the code someone is about to type, nor keep the unit talking. Code requests and wrong codes
are limited per source address (an address over its limit is refused for ``lock_s``, the others
are not) and overall (:data:`OVERALL` times that from all addresses together; that lock also voids
the live code). Checking a guess and counting it happen under one lock.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from appliance.events import EventBus
from appliance.pairing.limits import Scope, SourceLimit

log = logging.getLogger(__name__)

Purpose = Literal["pair", "owner"]
T = TypeVar("T")
# All addresses together may ask for codes and guess wrong this many times as often as one address.
OVERALL = 4


class CodeError(Exception):
    """A code cannot be used now; the message says what to do."""


class CodeLocked(CodeError):
    """Refused for ``seconds`` (HTTP 429 with Retry-After)."""

    def __init__(self, seconds: int, what: str = "wrong codes") -> None:
        super().__init__(f"too many {what}: try again in {seconds} seconds")
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
        max_requests: int = 5,
        repeat_s: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_wrong`` wrong codes or ``max_requests`` + 1 code requests from one address lock it
        out for ``lock_s``."""
        self._events = events
        self.purpose: Purpose = purpose
        self._ttl_s = ttl_s
        self._repeat_s = repeat_s
        self._clock = clock
        self._mutex = threading.Lock()
        self._code: str | None = None
        self._expires = 0.0
        self._said = -repeat_s
        self._lock_said: dict[Scope, float] = {}  # when a lock of each scope was last said
        self._wrong = SourceLimit(max_wrong, OVERALL * max_wrong, lock_s, lock_s, clock)
        self._asked = SourceLimit(max_requests + 1, OVERALL * (max_requests + 1), lock_s, lock_s, clock)

    def issue(self, source: str) -> str:
        """The live code, or a fresh one when none lives; shown and said unless it was just said.

        Published as ``pairing.code`` for the display and the speech part. Raises CodeLocked when
        ``source`` (or everyone) asked too often or guessed wrong too often.
        """
        with self._mutex:
            self.refuse_if_locked(source)
            started = self._asked.count(source)
            if started is None:
                now = self._clock()
                if self._code is None or now > self._expires:
                    self._code = f"{secrets.randbelow(10**6):06d}"
                    self._expires = now + self._ttl_s
                    self._said = -self._repeat_s
                code, left = self._code, self._expires - now
                say = now - self._said >= self._repeat_s
                if say:
                    self._said = now
        if started is not None:
            raise self._locked_out(started, self._asked, "code requests")
        if say:
            self._show(code, left)
        return code

    @property
    def ttl_s(self) -> float:
        """How long a new code works."""
        return self._ttl_s

    def seconds_left(self) -> float:
        """How long the live code still works; 0 when none lives. A code asked for again is the live
        one, not a new one: the page says how long it has left, not how long a new one would."""
        with self._mutex:
            return max(0.0, self._expires - self._clock()) if self._code is not None else 0.0

    def waiting(self) -> bool:
        """Whether a code lives now (the login page then puts the focus in the code field)."""
        with self._mutex:
            return self._code is not None and self._clock() <= self._expires

    def repeat(self, source: str) -> None:
        """Show and say the live code again, the same digits; raises CodeExpired or CodeLocked.

        Counted as a code request from ``source``, like :meth:`issue`."""
        with self._mutex:
            self.refuse_if_locked(source)
            started = self._asked.count(source)
            if started is None:
                code = self._live()
                now = self._clock()
                left, self._said = self._expires - now, now
        if started is not None:
            raise self._locked_out(started, self._asked, "code requests")
        self._show(code, left)

    def _show(self, code: str, seconds: float) -> None:
        what = "pairing" if self.purpose == "pair" else "owner"
        # The digits go in the event's data only (for the display and speech): messages are logged
        # and listed by /api/status, and codes are secrets. ``seconds``: how long the code still works.
        self._events.publish(
            "pairing.code",
            f"New {what} code on the display",
            code=code,
            purpose=self.purpose,
            seconds=max(1, round(seconds)),
        )

    def _live(self) -> str:
        if self._code is None or self._clock() > self._expires:
            self._code = None
            raise CodeExpired()
        return self._code

    def check(self, guess: str, source: str) -> None:
        """Accept ``guess`` from ``source`` once (the code is then spent), or count it as wrong and raise."""
        guess_bytes = guess.strip().encode()
        self.attempt(source, lambda code: True if hmac.compare_digest(code.encode(), guess_bytes) else None)

    def attempt(self, source: str, proves: Callable[[str], T | None]) -> T:
        """Let ``proves`` test the live code once for ``source``: its result when it proves knowing
        the code (the code is then spent), else counted as a wrong code. Raises CodeError.

        ``proves`` runs under the guard's lock, so a guess is compared and counted in one step.
        """
        with self._mutex:
            self.refuse_if_locked(source)
            result = proves(self._live())
            if result is not None:
                self._code = None
            else:
                started = self._wrong.count(source)
                if started == "all":
                    self._code = None  # guessing from many addresses: this code is done with
                left = self._wrong.left(source)
        if result is not None:
            # The display takes a used code off the screen.
            self._events.publish(
                "pairing.code_used", f"The {self.purpose} code was used", purpose=self.purpose
            )
            return result
        if started is not None:
            raise self._locked_out(started, self._wrong, "wrong codes")
        raise CodeError(f"wrong code: {left} {'try' if left == 1 else 'tries'} left")

    def refuse_if_locked(self, source: str) -> None:
        """Raise CodeLocked while ``source`` (or everyone) is refused."""
        for limit, what in ((self._wrong, "wrong codes"), (self._asked, "code requests")):
            seconds, _ = limit.locked_for(source)
            if seconds > 0:
                raise CodeLocked(max(1, round(seconds)), what)

    def _locked_out(self, scope: Scope, limit: SourceLimit, what: str) -> CodeLocked:
        """Say, as the lock starts, that codes are refused (from one address or from all): once per
        lock period and scope, so many addresses locked one after another are not a stream of speech."""
        seconds = max(1, round(limit.lock_s))
        now = self._clock()
        with self._mutex:
            quiet = now - self._lock_said.get(scope, -limit.lock_s) < limit.lock_s
            if not quiet:
                self._lock_said[scope] = now
        if quiet:
            return CodeLocked(seconds, what)
        subject = "Pairing" if self.purpose == "pair" else "Settings"
        source, whom = (
            ("several addresses", "everyone") if scope == "all" else ("one address", "that address")
        )
        self._events.publish(
            "pairing.locked",
            f"Too many {what} from {source}. {subject} locked for {_spoken_duration(seconds)} for {whom}.",
            seconds=seconds,
            purpose=self.purpose,
            scope=scope,
        )
        return CodeLocked(seconds, what)


def _spoken_duration(seconds: int) -> str:
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
