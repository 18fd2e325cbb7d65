"""Limits per source address and overall: how often codes may be asked for or guessed wrong.

One address over its limit is refused for a while; the others are not, so one attacker cannot
lock out the owner or a legitimate unit. All addresses together have a higher limit, which bounds
guessing from many addresses at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

Scope = Literal["source", "all"]


class SourceLimit:
    """Counts events per source address and from all of them within ``window_s``.

    The event that reaches ``per_source`` (or ``overall``) locks that source (or every source) out
    for ``lock_s`` and starts the count again. Not thread-safe: its owner calls it under the lock
    that also guards what is limited, so checking and counting are one step.
    """

    def __init__(
        self, per_source: int, overall: int, window_s: float, lock_s: float, clock: Callable[[], float]
    ) -> None:
        self.per_source = per_source
        self._overall = overall
        self._window_s = window_s
        self.lock_s = lock_s
        self._clock = clock
        self._times: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._until: dict[str, float] = {}
        self._all_until = 0.0

    def locked_for(self, source: str) -> tuple[float, Scope]:
        """Seconds this source must still wait (0 when it may go on) and why."""
        now = self._clock()
        if self._all_until > now:
            return self._all_until - now, "all"
        return max(0.0, self._until.get(source, 0.0) - now), "source"

    def left(self, source: str) -> int:
        """Events this source may still have before it is locked out."""
        return self.per_source - len(self._recent(source, self._clock()))

    def count(self, source: str) -> Scope | None:
        """Count one event; the scope of the lock it started, if it started one."""
        now = self._clock()
        self._prune(now)
        times = self._recent(source, now)
        self._times[source] = times
        times.append(now)
        self._all.append(now)
        if len(self._all) >= self._overall:
            self._all.clear()
            self._times.clear()
            self._all_until = now + self.lock_s
            return "all"
        if len(times) >= self.per_source:
            del self._times[source]
            self._until[source] = now + self.lock_s
            return "source"
        return None

    def _recent(self, source: str, now: float) -> deque[float]:
        """The source's events within the window, older ones dropped (the window slides)."""
        times = self._times.get(source, deque())
        horizon = now - self._window_s
        while times and times[0] < horizon:
            times.popleft()
        return times

    def _prune(self, now: float) -> None:
        # Every counted source has an event in the window, and all of them together fewer than
        # ``overall``: so the tables stay that small whatever the number of addresses.
        horizon = now - self._window_s
        while self._all and self._all[0] < horizon:
            self._all.popleft()
        if len(self._times) >= self._overall:
            self._times = {s: t for s, t in self._times.items() if t and t[-1] >= horizon}
        if len(self._until) >= self._overall:
            self._until = {s: u for s, u in self._until.items() if u > now}
