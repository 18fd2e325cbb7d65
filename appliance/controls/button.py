"""What the call button does.

- idle: a press first says the calls missed since they were last said ("Missed call from Bela.":
  said once as the caller gave up, when the owner may have been in another room; kept in memory
  only, by unit id; not one that ended in the last ``JUST_SAID_SECONDS``), then calls the paired unit; with
  several, each press says the next name and the call goes to the last one named once
  ``choice_seconds`` pass, after the name was heard, without another press (a call coming in
  meanwhile ends the choice); two units of the same name are told apart by
  number, and the call goes to the unit named, by its id;
- calling: a press says that the call still rings there, and how to stop it;
- ringing: a press answers, saying so; not one while sentences from before the ring are still
  said or waiting (the ring is said after them): the owner has not heard that anyone calls;
- a call just over (ended, busy, failed, lost: its connections close before the unit is idle again,
  within a second): a press waits for idle and then does what it does there, to call back at once;
  one still closing after ``CLOSING_WAIT_SECONDS`` (a relay's TURN allocation) is said, not dropped;
- in a call: a press repeats the other person's last expression (also while something is being
  said, which is when the user most often missed it), once no second press came within the
  privacy gestures' ``double_seconds`` (two presses switch sharing);
- a long press (``hold_seconds``) hangs up, stops calling, declines a ringing call (once its ring
  was said, as a press answers) or cancels a choice; when idle it says the unit's address
  (``say_address``), for pairing by address without a sighted helper;
- privacy (``privacy.py``): two quick presses in a call switch sharing of expressions; four long
  presses in idle forget everything; once that has begun, any press says so again and does nothing
  else (a press to stop it would have called the unit about to be told it is forgotten);
- a web page waiting for the owner's press (``presence``) takes a press in idle, and ends a choice
  under way (its timer would have called the unit named last);
- a button already down as the unit starts (a restart while it was held) is not a press when let go.

A button switched on in the configuration that cannot be opened is told (``button.unavailable``):
the owner would otherwise press a dead button and hear nothing.

gpiozero calls back from its own thread; the call engine's methods can block for seconds, so they
run one at a time on a worker thread and the button stays responsive. Whatever fails there (the
store on a card that turned read-only, the call engine) is logged and the user hears that it did
not work: a press must never end in silence.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from appliance.call import CLOSING_WAIT_SECONDS, IN_CALL, IN_PROGRESS, MISSED, CallError
from appliance.config import ButtonConfig
from appliance.controls import ControlError
from appliance.controls.privacy import PrivacyGestures
from appliance.events import Event, EventBus
from appliance.speech.announcer import Announcer
from appliance.state import Peer, StateError, name_number

log = logging.getLogger(__name__)

# Faults of the parts a press reaches that say enough in their message: the store (a card that
# turned read-only or full), the files "forget everything" writes, the call engine.
KNOWN_FAULTS = (sqlite3.Error, StateError, OSError, CallError)
# The longest wait for a unit's name to be heard before its choice time runs: what is said before
# it (the start-up sentence with its question takes about 10 s) must not use up the time to press.
HEARD_SECONDS = 30.0
# A missed call that ended this recently is not said again at a press: the unit has just said it.
JUST_SAID_SECONDS = 10.0


class Calls(Protocol):
    """The call engine's thread-safe methods (``appliance.call.engine.CallEngine``)."""

    has_button: bool

    @property
    def state(self) -> str: ...

    def call(self, unit_id_or_name: str) -> None: ...

    def answer(self) -> None: ...

    def hangup(self) -> None: ...

    def wait_closed(self, timeout: float) -> None: ...


class PresenceWait(Protocol):
    """Owner presence waiting for a press (``appliance.web.presence.ButtonPresence``)."""

    has_button: bool

    def press(self) -> bool: ...


class CallButton:
    def __init__(
        self,
        button: Any,  # a gpiozero.Button (untyped library)
        calls: Calls,
        announcer: Announcer,
        peers: Callable[[], list[Peer]],
        *,
        events: EventBus,
        choice_seconds: float = 2.0,
        say_address: Callable[[], None] | None = None,
        privacy: PrivacyGestures | None = None,
        presence: PresenceWait | None = None,
    ) -> None:
        self._button, self._calls, self._announcer, self._peers = button, calls, announcer, peers
        # Owner presence (appliance/web/presence.py): a page may be waiting for this press.
        self._presence = presence
        self._privacy = privacy
        self._say_address = say_address
        self._choice_s = choice_seconds
        self._lock = threading.Lock()
        self._held = False
        self._choice: list[Peer] = []  # the units offered, and the index of the one said last
        self._chosen = -1
        self._choosing: threading.Event | None = None  # set to end the wait for the last one named
        self._calling = ""  # the name of the unit called, while it rings there
        # Who called unanswered since last said, by unit id (two units may share a name): their
        # name and when the call ended.
        self._missed: dict[str, tuple[str, float]] = {}
        self._forgetting = False
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="button")
        self._events = events
        self._unsubscribe = events.subscribe(self._on_event)
        # gpiozero calls back on changes only: a button down now is first seen let go, as a press.
        self._held = bool(button.is_pressed)
        button.when_pressed = self._pressed
        button.when_held = self._on_held
        button.when_released = self._released
        # From now on a ring says to press it, and the pages offer it for owner presence.
        self._has_button(True)

    def _on_event(self, event: Event) -> None:
        """A call placed or coming in ends a choice: its timer must not call out of a call."""
        if event.topic == "unit.forgetting":
            with self._lock:
                self._forgetting = True
                self._cancel_choice()
                self._missed.clear()
            return
        if event.topic != "call.state":
            return
        state, peer = str(event.data.get("state", "")), str(event.data.get("peer") or "")
        who = str(event.data.get("unit_id") or peer)
        with self._lock:
            if state == "calling":
                self._calling = peer
            if state != "idle":
                self._cancel_choice()
            if state == "connected":  # they have talked since
                self._missed.pop(who, None)
            if state == "ended" and event.data.get("reason") == MISSED:
                self._missed.setdefault(who, (peer, time.monotonic()))

    def _pressed(self) -> None:
        with self._lock:
            self._held = False

    def _on_held(self) -> None:
        with self._lock:
            # gpiozero's hold thread can time out just as the button is let go: the release, seen
            # first, counted it as a press (a ringing call answered), so it is not a hold as well.
            if not self._button.is_pressed:
                return
            self._held = True
            cancelled = self._cancel_choice()
        self._submit(lambda: self._long_press(cancelled))

    def _released(self) -> None:
        with self._lock:
            if self._held:
                return
        self._submit(self._short_press)

    def _long_press(self, cancelled_choice: bool) -> None:
        if self._said_forgetting():
            return
        state = self._closed_state()
        if state is None:
            return
        if state == "ringing" and self._ring_unheard():
            log.info("button held before the ring was said; not declining")
        elif state in IN_PROGRESS:
            log.info("button held: hanging up (%s)", state)
            self._guard(self._calls.hangup)
        elif cancelled_choice:
            self._announcer.state("cancelled")
        elif state == "idle" and self._privacy is not None and self._privacy.hold_in_idle():
            return
        elif state == "idle" and self._say_address is not None:
            self._say_address()

    def _ring_unheard(self) -> bool:
        """Whether the ring here is still to be said after sentences from before it (the address, a
        code, a missed call): a press then neither answers nor declines a call the owner has not
        heard of. The ring's time is its event's, read from the bus: the bus keeps an event before
        any subscriber hears it (this one may hear it after the press)."""
        newest = self._events.recent("call.state")[-1:]
        if not newest or newest[0].data.get("state") != "ringing":
            return False
        return self._announcer.said_first(newest[0].t)

    def _said_forgetting(self) -> bool:
        with self._lock:
            forgetting = self._forgetting
        if forgetting:
            self._announcer.state("forgetting")
        return forgetting

    def _closed_state(self) -> str | None:
        """The call state, once a call just over has closed (see the top); None when it has not
        within ``CLOSING_WAIT_SECONDS`` (a relay's TURN can take longer), which is said."""
        state = self._calls.state
        if state not in IN_PROGRESS and state != "idle":
            self._calls.wait_closed(CLOSING_WAIT_SECONDS)
            state = self._calls.state
            if state not in IN_PROGRESS and state != "idle":
                self._announcer.state("still_closing")
                return None
        return state

    def _short_press(self) -> None:
        if self._said_forgetting():
            return
        state = self._closed_state()
        if state is None:
            return
        if state == "ringing":
            if self._ring_unheard():
                log.info("button: pressed before the ring was said; not answering")
                return
            log.info("button: answering")
            # Said at once: the call is "ringing" until its connection opens (up to seconds), and
            # a press must never end in silence (a second press, too, is told it is being answered).
            self._announcer.state("answering")
            self._calls.answer()
        elif state == "calling":
            with self._lock:
                peer = self._calling
            self._announcer.state("still_calling", peer=peer)
        elif state in IN_CALL:
            if self._privacy is None:
                self._announcer.repeat_last()
            else:
                self._privacy.press_in_call(self._repeat_in_call)
        elif state == "idle":
            if self._presence is not None and self._presence.press():
                with self._lock:
                    cancelled = self._cancel_choice()
                if cancelled:
                    self._announcer.state("cancelled")
                return
            self._say_missed()
            self._offer_next()

    def _say_missed(self) -> None:
        """The calls missed since they were last said, oldest first; not one that ended moments ago
        (a press as the caller gave up): the unit has just said it."""
        now = time.monotonic()
        with self._lock:
            missed, self._missed = self._missed, {}
        for peer, ended in missed.values():
            if now - ended > JUST_SAID_SECONDS:
                self._announcer.state("missed_call", peer=peer)

    def _repeat_in_call(self) -> None:
        """The other person's expression again, unless the call ended while a second press was
        awaited (it would say "No expression yet." after "Call ended.")."""
        if self._calls.state in IN_CALL:
            self._announcer.repeat_last()

    def _offer_next(self) -> None:
        with self._lock:
            if self._choosing is None:
                self._choice, self._chosen = self._peers(), -1
            choice = self._choice
            if len(choice) > 1:
                self._chosen = (self._chosen + 1) % len(choice)
                self._name(choice[self._chosen])
                self._wait_for_choice()
                return
        if choice:
            self._place(choice[0].unit_id)
        else:
            self._announcer.state("no_peers")

    def _name(self, peer: Peer) -> None:
        """Says "Bela?", or "Mum, number 2?" for the second paired of two units named Mum."""
        n = name_number(peer, self._choice)
        if n is None:
            self._announcer.state("choose_peer", peer=peer.name)
        else:
            self._announcer.state("choose_peer_number", peer=peer.name, n=n)

    def _wait_for_choice(self) -> None:
        """Under the lock: the unit named last is called unless something else happens first."""
        self._cancel_choice()
        chosen = self._choosing = threading.Event()
        threading.Thread(target=self._choose, args=(chosen,), name="button-choice", daemon=True).start()

    def _choose(self, chosen: threading.Event) -> None:
        self._announcer.wait_idle(HEARD_SECONDS)  # the name, and what was said before it
        if chosen.wait(self._choice_s):
            return  # another press, a long press or a call came first
        with self._lock:
            if self._choosing is not chosen:
                return
            self._choosing = None
            target = self._choice[self._chosen].unit_id
        self._submit(lambda: self._place(target))

    def _cancel_choice(self) -> bool:
        """Under the lock: end the wait of a choice; False when there was none."""
        if self._choosing is None:
            return False
        self._choosing.set()
        self._choosing = None
        return True

    def _place(self, target: str) -> None:
        log.debug("button: calling %s", target)
        self._guard(lambda: self._calls.call(target))

    def _guard(self, action: Callable[[], None]) -> None:
        """The engine says why a call cannot be placed; the user hears that it failed."""
        try:
            action()
        except CallError as e:
            log.warning("button action failed: %s", e)
            self._announcer.state("failed")

    def _submit(self, action: Callable[[], None]) -> None:
        self._work.submit(self._safely, action)

    def _safely(self, action: Callable[[], None]) -> None:
        """Runs a press's action on the worker thread, where an exception would otherwise stay in
        its future, unseen and unheard."""
        try:
            action()
        except KNOWN_FAULTS as e:  # their message says what failed; the traceback adds nothing
            log.error("button action failed: %s", e)
            self._say_it_failed()
        except Exception:
            log.exception("button action failed")
            self._say_it_failed()

    def _say_it_failed(self) -> None:
        try:
            self._announcer.state("action_failed")
        except Exception:  # the speaker itself may be what fails: the log has it already
            log.exception("cannot say that the button's action failed")

    def close(self) -> None:
        self._unsubscribe()
        with self._lock:
            self._cancel_choice()
        self._button.when_pressed = self._button.when_held = self._button.when_released = None
        self._work.shutdown(wait=True)
        if self._privacy is not None:
            self._privacy.close()
        self._button.close()
        self._has_button(False)

    def _has_button(self, works: bool) -> None:
        self._calls.has_button = works
        if self._presence is not None:
            self._presence.has_button = works


def open_button(pin: int, hold_seconds: float) -> Any:
    """A gpiozero Button on a BCM pin wired to ground (pull-up); ControlError without GPIO."""
    try:
        from gpiozero import Button
        from gpiozero.exc import GPIOZeroError, PinFactoryFallback
    except ImportError as e:
        raise ControlError(f"gpiozero is not installed: {e}") from e
    with warnings.catch_warnings(record=True) as fallbacks:
        # gpiozero warns once per pin library it could not load; those reasons matter on a Pi (lgpio
        # failing under the service's sandbox leaves a factory without the Pi 5's register map).
        warnings.simplefilter("always", PinFactoryFallback)
        try:
            button = Button(pin, pull_up=True, hold_time=hold_seconds, bounce_time=0.03)
        except (GPIOZeroError, OSError, RuntimeError) as e:
            tried = "; ".join(str(w.message) for w in fallbacks)
            raise ControlError(
                f"no GPIO for the button on pin {pin}: {e} ({tried or 'no pin library'})"
            ) from e
    for w in fallbacks:
        log.warning("button: a pin library was not used: %s", w.message)
    log.info("button on pin %d through %s", pin, type(button.pin_factory).__name__)
    return button


def start_button(
    cfg: ButtonConfig,
    calls: Calls,
    announcer: Announcer,
    peers: Callable[[], list[Peer]],
    say_address: Callable[[], None] | None = None,
    *,
    events: EventBus,
    privacy: PrivacyGestures | None = None,
    presence: PresenceWait | None = None,
) -> CallButton | None:
    """The call button, or None when it is switched off or cannot be opened (told: see above)."""
    if not cfg.enabled:
        return None
    try:
        gpio = open_button(cfg.pin, cfg.hold_seconds)
    except ControlError as e:
        log.warning("%s: no call button (calls still work from the web page and auto-answer)", e)
        events.publish("button.unavailable", f"the call button is not working: {e}", reason=str(e))
        return None
    return CallButton(
        gpio,
        calls,
        announcer,
        peers,
        events=events,
        choice_seconds=cfg.choice_seconds,
        say_address=say_address,
        privacy=privacy,
        presence=presence,
    )
