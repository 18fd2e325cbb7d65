"""The announcer: one thread that says things in priority order through the speaker.

Rules, in the order they apply:
- device and call states (and repeats the user asked for) go first, in the order they happened;
- an announcement always plays to its end: nothing is cut mid-word;
- an emotion is said only when it differs from the last one said for that person, only when its
  confidence reaches ``min_confidence``, and at most once per ``min_interval_s``;
- only the newest emotion waits (a newer one replaces it), and it is dropped, not said late, when
  other announcements kept it waiting more than ``stale_s`` after it was due.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from appliance.audio import AudioError, Speaker
from appliance.audio.mixer import BLOCK_SECONDS, HISTORY
from appliance.speech import SpeechError, tones
from appliance.speech.espeak import Espeak
from appliance.words.phrases import Phrases

log = logging.getLogger(__name__)

# Sentences waiting to be said at most; beyond it the oldest are dropped.
MAX_WAITING_STATES = 16

Mode = Literal["speech", "tones", "both", "off"]
Kind = Literal["state", "emotion", "repeat"]


@dataclass(frozen=True)
class Item:
    kind: Kind
    text: str = ""
    peer: str = ""
    label: str = ""
    t: float = 0.0  # when it happened (time.monotonic())
    secret: bool = False  # holds a code: said, never logged


@dataclass(frozen=True)
class Spoken:
    item: Item
    started_at: float  # when it was handed to the speaker (``Announcer.clock``)
    seconds: float


class Announcer:
    def __init__(
        self,
        speaker: Speaker,
        tts: Espeak,
        phrases: Phrases,
        *,
        mode: Mode = "speech",
        min_confidence: float = 0.6,
        min_interval_s: float = 5.0,
        stale_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._speaker, self._tts, self.phrases = speaker, tts, phrases
        self.mode: Mode = mode
        self._min_confidence, self._interval, self._stale = min_confidence, min_interval_s, stale_s
        self._clock = clock
        self._cond = threading.Condition()
        # Sentences waiting, newest kept: a flood (another unit's messages, a part that fails and
        # recovers over and over) would otherwise put the newest one, a call's end, minutes away.
        self._states: deque[Item] = deque(maxlen=MAX_WAITING_STATES)
        self._pending: Item | None = None
        self._said: dict[str, str] = {}  # peer -> last emotion said
        self._current: Item | None = None  # newest confident emotion, for repeat_last
        self._last_emotion_at = -float("inf")
        self._playing: Item | None = None  # the sentence or expression being said
        self._playing_from = 0.0  # when it started (its synthesis included)
        self._stop = False
        self.spoken: list[Spoken] = []
        self.dropped: list[Item] = []
        self._thread = threading.Thread(target=self._run, name="announcer", daemon=True)
        self._thread.start()

    @property
    def speaking(self) -> bool:
        with self._cond:
            return self._playing is not None

    @property
    def clock(self) -> Callable[[], float]:
        """The clock of ``spoken`` and ``longest_silence``."""
        return self._clock

    def said_first(self, t: float) -> bool:
        """Whether a sentence from before ``t`` (``clock``'s time; time.monotonic, as an event's) is
        being said or waits to be: news from ``t`` on (a ring) is said after those, unheard till then."""
        with self._cond:
            playing = self._playing is not None and self._playing.t < t
            return playing or any(item.t < t for item in self._states)

    def longest_silence(self, since: float) -> float:
        """The longest time since ``since`` (``clock``) that the unit was heard saying nothing: what
        failed to play counts as silence."""
        with self._cond:
            spans = [(s.started_at, s.started_at + s.seconds) for s in self.spoken]
            spans = [span for span in spans if span[1] > since]
            if self._playing is not None:
                spans.append((self._playing_from, float("inf")))
        longest, cursor = 0.0, since
        for start, end in spans:
            longest, cursor = max(longest, start - cursor), max(cursor, end)
        return max(longest, self._clock() - cursor)

    def say(self, text: str, *, secret: bool = False) -> None:
        """Queue a device or call state sentence; it goes before any emotion.

        ``secret``: it holds an owner or pairing code, which is said but never logged."""
        self._queue(Item("state", text=text, t=self._clock(), secret=secret))

    def state(self, key: str, **fields: object) -> None:
        self.say(self.phrases.say(key, **fields))

    def repeat_last(self) -> None:
        """Say the other person's current expression again (or why there is none, as the screen
        shows it), after what is playing now."""
        with self._cond:
            current = self._current
        self._queue(current and dataclasses.replace(current, kind="repeat", t=self._clock()))

    def expression_unknown(self, peer: str, text: str = "") -> None:
        """``peer``'s expression is not known any more: they paused sharing, left the camera, or
        resumed sharing and none has come yet. A repeat says ``text`` (the screen shows the same)
        or, without one, "No expression yet."; their expression still waiting is not said, and
        their next one is said even if it is the one said last."""
        with self._cond:
            self._current = Item("repeat", text=text, peer=peer) if text else None
            self._said.pop(peer, None)
            if self._pending is not None and self._pending.peer == peer:
                self._pending = None

    def _queue(self, item: Item | None) -> None:
        with self._cond:
            self._states.append(item or Item("state", text=self.phrases.say("no_emotion"), t=self._clock()))
            self._cond.notify_all()

    def emotion(self, peer: str, label: str, confidence: float, t: float | None = None) -> bool:
        """Offer the other person's expression; True when it will be said (unless it goes stale).

        One below ``min_confidence`` is not said, but it is the person's expression now: the screen
        shows it and a repeat says it, and an earlier one still waiting is no longer true."""
        item = Item("emotion", peer=peer, label=label, t=self._clock() if t is None else t)
        with self._cond:
            self._current = item
            if confidence < self._min_confidence:
                if self._pending is not None and self._pending.peer == peer:
                    self._pending = None
                return False
            if self.mode == "off" or self._said.get(peer) == label:
                if self._pending is not None and self._pending.peer == peer:
                    self._pending = None  # it went back to what was said last: nothing changed
                return False
            self._pending = item
            self._cond.notify_all()
        return True

    def configure(self, mode: Mode, phrases: Phrases) -> None:
        """New settings from the owner; they apply from the next announcement."""
        with self._cond:
            self.mode, self.phrases = mode, phrases
            if mode == "off":
                self._pending = None

    def forget_emotions(self) -> None:
        """A call ended: the next call's first expression is news again."""
        with self._cond:
            self._said.clear()
            self._pending = self._current = None

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is playing or waiting to be said; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._playing is not None or self._states or self._pending is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def _next(self) -> tuple[Item | None, float | None]:
        """The item to say now, or None and how long to wait for the pending emotion to be due."""
        if self._states:
            return self._states.popleft(), None
        if self._pending is None:
            return None, None
        now = self._clock()
        # The mixer starts a clip at its next block, so one block of margin keeps heard starts apart.
        due = max(self._pending.t, self._last_emotion_at + self._interval + BLOCK_SECONDS)
        if now < due:
            return None, due - now
        item, self._pending = self._pending, None
        if now > due + self._stale:
            log.debug("dropped stale emotion %s of %s (%.1f s late)", item.label, item.peer, now - due)
            self.dropped.append(item)
            del self.dropped[:-HISTORY]
            return None, None
        self._said[item.peer] = item.label
        return item, None

    def _run(self) -> None:
        while True:
            with self._cond:
                item, wait = self._next()
                while item is None and not self._stop:
                    self._cond.wait(wait)
                    item, wait = self._next()
                if self._stop or item is None:
                    return
                self._playing, self._playing_from = item, self._clock()
            try:
                self._speak(item)
            except (SpeechError, AudioError) as e:
                # Never the text: it can be an owner or pairing code, which no log may hold.
                log.error("could not say a %s announcement: %s", item.kind, e)
            finally:
                with self._cond:
                    self._playing = None
                    self._cond.notify_all()

    def _speak(self, item: Item) -> None:
        clips: list[tuple[np.ndarray, int]] = []
        if item.label and self.mode in ("tones", "both"):
            clips.append((tones.chime(item.label), tones.TONE_RATE))
        # A sentence (a state, or a repeat of "Asha paused sharing") has no chime: it is said.
        if item.text or self.mode != "tones":
            text = text_of(item, self.phrases)
            clips.append(self._tts.synthesize(text, self.phrases.voice))
        started = self._clock()
        log.debug("saying: %s", "(a code)" if item.secret else text_of(item, self.phrases))
        if item.kind == "emotion":
            # The interval runs from when it is heard, not from when synthesis began.
            with self._cond:
                self._last_emotion_at = started
        seconds = sum(self._speaker.play(pcm, rate) for pcm, rate in clips)
        self.spoken.append(Spoken(item, started, seconds))
        del self.spoken[:-HISTORY]

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=15)


def text_of(item: Item, phrases: Phrases) -> str:
    return item.text or phrases.emotion(item.peer, item.label)
