"""Real-time pacing and retry delays, shared by the camera sources, the speaker, call audio and the
vision worker."""

from __future__ import annotations

import time

# Reopening a failed device (the speaker's aplay, the expression pipeline): the first try this long
# after the failure, then twice as long each time, at most the maximum.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def backoff(attempt: int, first: float = RETRY_FIRST_SECONDS) -> float:
    """Seconds to wait before reopening attempt ``attempt`` (0 for the first, ``first`` long; a
    ``first`` set above the maximum is kept). The exponent stops growing past the maximum: 2**1024
    does not fit a float, and a speaker gone for 8 hours reaches attempt 1024 (its thread would die
    of the OverflowError, the unit silent for good)."""
    return min(first * 2.0 ** min(attempt, 16), max(RETRY_MAX_SECONDS, first))


class Pacer:
    """Slots ``1 / rate`` apart in real time. A caller more than ``max_lag_s`` behind (not read for a
    while: a paused capture, a busy machine, a stall) goes on from now instead of catching up in a
    burst."""

    def __init__(self, rate: float, max_lag_s: float = 0.2) -> None:
        self._period = 1.0 / rate
        self._max_lag_s = max_lag_s
        self._due: float | None = None

    def delay(self) -> float:
        """Seconds until the next slot is due (0: now), and that slot taken."""
        now = time.monotonic()
        if self._due is None or now - self._due > self._max_lag_s:
            self._due = now
        wait = max(0.0, self._due - now)
        self._due += self._period
        return wait

    def wait(self) -> None:
        """Sleep until the next slot."""
        time.sleep(self.delay())
