"""The event bus: how parts tell each other (and the speech part) what happened.

Events carry a topic (``camera.lost``, ``vision.emotion``...), an English sentence for the log and
structured data. Subscribers are called in the publisher's thread and must return quickly
(hand work to their own queue or loop).

Pairing and settings topics (``appliance/pairing``, ``appliance/state.py``): ``pairing.code``
{code, purpose: pair|owner}, ``pairing.locked`` {seconds, purpose}, ``pairing.done`` {peer, unit_id},
``pairing.removed`` {peer} (trust in a unit was removed, from either side), ``settings.changed``
{changed: [field names], settings: {every field}}; ``owner.waiting``, ``owner.present``,
``owner.contested`` (a page waits for the button to log in; a press let it in; let neither in).

Call topics (``appliance/call``): ``call.state`` {state: idle|calling|ringing|connected|ended|failed|
busy|reconnecting|lost, peer, reason} (reason "remote hang-up" when the other unit hung up, "not
answered" when it declined or let ring a call placed here, "missed" when a call here rang out or
its caller gave up; a failed call's ``cause``, unreachable|not known, when it is known);
``call.ring`` {peer, guest, caller} (still ringing, every few seconds; caller: rings at the other end);
``call.tried`` {peer, guest} (called while this unit was busy, and told so);
``remote.emotion`` {peer, emotion, confidence} (the other unit's user); ``remote.no_face`` {peer}
(the other unit sees no face);
``remote.sharing`` {peer, paused, reason} (reason "unavailable": their expressions cannot be
described).

Device topics: ``camera.*``, ``vision.*``, ``audio.*``, ``microphone.unavailable`` /
``microphone.recovered``, ``button.unavailable``, ``display.unavailable``; the unit's own:
``unit.ready`` {name, address, ask_sharing, button}, ``unit.address`` (asked for),
``unit.address_changed`` (it changed while running), ``unit.forgetting``, ``unit.forgotten``
{card_kept}, ``unit.restarted``, ``unit.card_read_only``, ``unit.state_repaired`` {rows, peers}
(a damaged state database was made anew of the rows that read; ``peers``: the names kept),
``unit.identity_changed`` {peers} (the identity key is not the one the state belonged to: a
damaged key set aside and a new one made; ``peers``: the names to pair with again).

Privacy: what people feel and whom they call is never logged at INFO. Events of the topics in
:data:`PRIVATE_TOPICS` (expressions, faces, call parties, paired units) are logged with their
sentence only at DEBUG, which is off unless asked for (``emocall -v`` or ``--debug appliance.events``);
at INFO a call state is logged without its party, the others not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Subscriber = Callable[["Event"], None]
# Topics whose sentence names a person or an expression: DEBUG only (see the module docstring).
PRIVATE_TOPICS = frozenset(
    {
        "vision.emotion",
        "vision.no_face",
        "vision.face_back",
        "remote.emotion",
        "remote.no_face",
        "remote.sharing",
        "call.state",
        "pairing.done",
        "pairing.removed",
    }
)


@dataclass(frozen=True)
class Event:
    topic: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    t: float = field(default_factory=time.monotonic)


class EventBus:
    def __init__(self, history: int = 50) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._recent: deque[Event] = deque(maxlen=history)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns the function that unregisters it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, topic: str, message: str, **data: Any) -> Event:
        event = Event(topic, message, data)
        _log(event)
        with self._lock:
            self._recent.append(event)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                # One broken listener must not silence the others or the publisher.
                # By name (Narrator._on_event), not repr: "<... object at 0x7f...>" differs every run.
                name = getattr(callback, "__qualname__", type(callback).__qualname__)
                log.exception("event subscriber %s failed on %s", name, topic)
        return event

    def recent(self, prefix: str = "") -> list[Event]:
        with self._lock:
            return [e for e in self._recent if e.topic.startswith(prefix)]


def _log(event: Event) -> None:
    if event.topic not in PRIVATE_TOPICS:
        log.info("%s: %s", event.topic, event.message)
        return
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: %s", event.topic, event.message)
    elif event.topic == "call.state":
        log.info("call.state: %s", event.data.get("state", "?"))
