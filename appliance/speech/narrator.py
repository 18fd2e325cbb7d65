"""Turns what happens (bus events) into announcements, and says at start-up what works.

Which events are spoken depends on the verbosity: ``quiet`` says calls, pairing and the other
person's expressions; ``normal`` adds device states (camera, Coral) and a unit no longer paired;
``verbose`` adds the user's own face leaving and coming back. Start-up is one sentence, said once
the unit is ready and the first camera and vision reports had a moment to arrive: "emocall is
ready. Camera ready. Coral not found, using the processor." Until the owner has said whether
expressions are shared, it ends with that question.

Consent, said aloud: at connect each side hears whether its own expressions go to the other
("Bela hears your expressions." or "Your expressions are not shared."), and again when the owner
switches sharing during a call (the button's double press, the settings page).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from appliance.call import CALL_OVER, DESCRIBING, IN_CALL
from appliance.events import Event, EventBus
from appliance.speech.announcer import Announcer, Mode
from appliance.words.phrases import (
    DEFAULT_LABELS,
    Phrases,
    call_key,
    for_settings,
    relay_key,
    repair_key,
    sharing_key,
)

log = logging.getLogger(__name__)

LEVELS = {"quiet": 0, "normal": 1, "verbose": 2}
# topic -> (phrase key, lowest verbosity that says it)
DEVICE_EVENTS = {
    "camera.lost": ("camera_lost", 1),
    "camera.recovered": ("camera_recovered", 1),
    "vision.unavailable": ("vision_unavailable", 1),
    "vision.no_face": ("no_face", 2),
    "vision.face_back": ("face_back", 2),
    "audio.unavailable": ("speaker_unavailable", 0),
    "audio.recovered": ("speaker_back", 0),  # announcements made while it was out were lost
    "display.unavailable": ("display_unavailable", 0),
    # Said at each call that opens without it: the other person hears silence.
    "microphone.unavailable": ("microphone_unavailable", 0),
    "microphone.recovered": ("microphone_back", 0),
    "button.unavailable": ("button_unavailable", 0),
    "unit.forgetting": ("forgetting", 0),
    "unit.restarted": ("restarted", 0),
    "unit.card_read_only": ("card_read_only", 0),
    "relay.back": ("relay_back", 0),
    # Owner presence by the button (appliance/web/presence.py): the owner hears that a press would let
    # a page in, and that one was, so a press meant for a call cannot let a stranger in unnoticed.
    "owner.waiting": ("owner_button", 0),
    "owner.present": ("owner_let_in", 0),
    "owner.contested": ("owner_contested", 0),
}
START_TOPICS = (
    "camera.ready",
    "camera.lost",
    "camera.recovered",
    "vision.backend",
    "vision.unavailable",
    "button.unavailable",
)
SETTLE_SECONDS = 1.5
# A caller told busy while this unit was idle (another's call about to ring here): said once the
# unit has stayed idle this long, else when the call that took the line is over.
TRIED_IDLE_SECONDS = 3.0


def from_settings(
    settings: Mapping[str, Any], labels: Sequence[str] = DEFAULT_LABELS
) -> tuple[Mode, Phrases]:
    """Announcement mode and phrases from the owner's settings (``appliance.state.Settings`` fields)."""
    mode = str(settings.get("announcements", "speech"))
    if mode not in ("speech", "tones", "both", "off"):
        log.warning("unknown announcement mode %r: using speech", mode)
        mode = "speech"
    return cast(Mode, mode), for_settings(settings, labels)


CORAL_KEYS = {
    "used": "backend_edgetpu",
    "absent": "backend_cpu",
    "failed": "backend_coral_failed",
    "busy": "backend_processor",  # another process has it for now: nothing is wrong with it
    "unasked": "backend_processor",
}


def backend_key(event: Event) -> str:
    """What to say of a ``vision.backend``: a Coral there but failing is not "Coral not found"."""
    return CORAL_KEYS.get(str(event.data.get("coral")), "backend_processor")


class Narrator:
    def __init__(
        self,
        events: EventBus,
        announcer: Announcer,
        verbosity: str = "normal",
        settle_s: float = SETTLE_SECONDS,
        *,
        sharing: bool = False,
    ) -> None:
        self._announcer = announcer
        self._sharing = sharing  # the owner's share_expressions, followed from settings.changed
        self._faults: set[str] = set()  # the parts (DESCRIBING) that cannot describe expressions now
        self._call_state = ""  # the last call.state ("" before the first)
        self._guest = False  # the call is with a guest, who never receives the owner's expressions
        self._tried: list[str] = []  # who called while this unit was busy, said once the call is over
        self._tried_timer: threading.Timer | None = None
        self._ask_sharing = False
        self._has_button = False  # from unit.ready: whether the call button works
        self._level = LEVELS[verbosity]
        self._settle = settle_s
        self._lock = threading.Lock()
        self._started = False  # the start-up sentence was said; later device events are said alone
        self._speaker_down = False  # between audio.unavailable and audio.recovered
        self._unheard_start = ""  # the start-up sentence, kept while the speaker was down
        self._facts: dict[str, str] = {}  # part ("camera"...) -> phrase key, for the start-up sentence
        self._timer: threading.Timer | None = None
        self._handlers: dict[str, Callable[[Event], None]] = {
            "unit.ready": self._on_ready,
            "call.state": self._on_call,
            "call.ring": self._on_ring,
            "call.tried": self._on_tried,
            "relay.unreachable": lambda e: announcer.state(relay_key(e.data)),
            "unit.state_repaired": self._on_repaired,
            "unit.identity_changed": self._on_repaired,
            "remote.emotion": self._on_emotion,
            "remote.sharing": self._on_sharing,
            "remote.no_face": self._on_no_face,
            "pairing.code": self._on_code,
            "pairing.locked": self._on_locked,
            "unit.address": lambda e: announcer.say(announcer.phrases.address(str(e.data["address"]))),
            "pairing.done": lambda e: announcer.state("paired", peer=str(e.data.get("peer", ""))),
            "pairing.removed": self._on_unpaired,
            "settings.changed": self._on_settings,
            # On a read-only card the card still holds it all, back at the next boot (appliance/app.py).
            "unit.forgotten": lambda e: announcer.state(
                "forgotten_card_kept" if e.data.get("card_kept") else "forgotten"
            ),
        }
        # The speaker is tried as it opens, before this narrator exists: an audio server not up yet
        # is told once (audio.unavailable), and the start-up sentence must wait for it all the same.
        with self._lock:
            self._unsubscribe = events.subscribe(self._on_event)
            for event in events.recent("audio."):
                if event.topic in ("audio.unavailable", "audio.recovered"):
                    self._speaker_down = event.topic == "audio.unavailable"

    def _on_event(self, event: Event) -> None:
        if event.topic in DESCRIBING:  # as the engine follows them: what it tells the other side
            part, works = DESCRIBING[event.topic]
            (self._faults.discard if works else self._faults.add)(part)
        unheard = self._note_speaker(event.topic)
        if event.topic == "unit.forgetting":  # whoever tried to call is forgotten too
            with self._lock:
                self._tried.clear()
        handler = self._handlers.get(event.topic)
        if handler is not None:
            handler(event)
        elif event.topic in START_TOPICS and self._note_for_start(event):
            return
        elif event.topic in DEVICE_EVENTS:
            key, level = DEVICE_EVENTS[event.topic]
            if self._level >= level:
                self._announcer.state(key)
        elif event.topic == "vision.backend" and self._level >= 1:
            self._announcer.state(backend_key(event))
        if unheard:  # after "The speaker works again."
            self._announcer.say(unheard)

    def _note_speaker(self, topic: str) -> str:
        """Follow the speaker; when it is back, the start-up sentence it could not say, if any."""
        if topic not in ("audio.unavailable", "audio.recovered"):
            return ""
        with self._lock:
            self._speaker_down = topic == "audio.unavailable"
            if self._speaker_down:
                return ""
            unheard, self._unheard_start = self._unheard_start, ""
        return unheard

    def _note_for_start(self, event: Event) -> bool:
        """Keep a device report for the start-up sentence; False once that has been said."""
        with self._lock:
            if self._started:
                return False
            if event.topic.startswith("camera."):
                self._facts["camera"] = "camera_lost" if event.topic == "camera.lost" else "camera_ready"
            elif event.topic == "vision.backend":
                self._facts["vision"] = backend_key(event)
            elif event.topic == "button.unavailable":
                self._facts["button"] = "button_unavailable"
            else:
                self._facts["vision"] = "vision_unavailable"
            return True

    def _on_repaired(self, event: Event) -> None:
        """What happened, then the paired units by name: those kept in the state database (a unit the
        owner had unpaired, back from an old copy of a page the card gave back, is heard), or those
        to pair with again under a new key."""
        phrases = self._announcer.phrases
        changed = event.topic == "unit.identity_changed"
        said = [phrases.say("key_changed" if changed else repair_key(event.data))]
        if names := [str(n) for n in event.data.get("peers", [])]:
            said.append(phrases.say("pair_again" if changed else "units_kept", names=", ".join(names)))
        self._announcer.say(" ".join(said))

    def _on_ready(self, event: Event) -> None:
        name = str(event.data.get("name", "emocall"))
        with self._lock:
            self._ask_sharing = bool(event.data.get("ask_sharing", False))
            self._has_button = bool(event.data.get("button", False))
            self._timer = threading.Timer(self._settle, self._say_start, args=(name,))
            self._timer.daemon = True
            self._timer.start()

    def _say_start(self, name: str) -> None:
        with self._lock:
            self._started = True
            facts = [self._facts[k] for k in ("camera", "vision", "button") if k in self._facts]
            if self._ask_sharing:  # how to answer: the button only where one works
                facts.append("sharing_question" if self._has_button else "sharing_question_page")
        phrases = self._announcer.phrases
        sentence = " ".join([phrases.say("ready", name=name), *(phrases.say(k) for k in facts)])
        with self._lock:
            if self._speaker_down:  # an audio server not up yet: said once the speaker plays
                self._unheard_start = sentence
                return
        self._announcer.say(sentence)

    def _on_call(self, event: Event) -> None:
        data = event.data
        state = str(data.get("state", ""))
        # First: an expression coming in from another thread from now on sees the call over.
        previous, self._call_state, self._guest = self._call_state, state, bool(data.get("guest"))
        if state in CALL_OVER:
            self._announcer.forget_emotions()
        peer = str(data.get("peer") or "")
        key = call_key(data)
        # Answered by itself: "connected" follows at once (a guest is still said to be one).
        if key is not None and key != "ringing_auto":
            self._announcer.state(key, peer=peer)
        if state == "connected" and previous != "reconnecting":
            self._say_consent(peer, guest=self._guest)
        if state == "idle":
            self._say_tried()

    def _on_ring(self, event: Event) -> None:
        """A call still rings: said again, short ("Asha is calling."; at the caller's end "Still
        calling Asha."), for an owner who may have missed the first; not while anything is still
        being said, so repeats never pile up."""
        peer = str(event.data.get("peer") or "")
        if event.data.get("caller"):
            if self._call_state == "calling" and self._announcer.wait_idle(0):
                self._announcer.state("still_ringing_there", peer=peer)
        elif self._call_state == "ringing" and self._announcer.wait_idle(0):
            self._announcer.state("guest_calling" if event.data.get("guest") else "ringing_auto", peer=peer)

    def _on_tried(self, event: Event) -> None:
        """Someone called while this unit was busy (told so): said once the call is over, when the
        unit is idle again; one told busy while the unit was still idle (a guest whose offer came
        as another guest's call was about to ring) once the unit stays idle TRIED_IDLE_SECONDS, or
        after that call (it waited for the next call's end if the other never rang)."""
        with self._lock:
            peer = str(event.data.get("peer") or "")
            if peer not in self._tried:
                self._tried.append(peer)
            if self._call_state in ("", "idle"):
                if self._tried_timer is not None:
                    self._tried_timer.cancel()
                self._tried_timer = threading.Timer(TRIED_IDLE_SECONDS, self._say_tried_if_idle)
                self._tried_timer.daemon = True
                self._tried_timer.start()

    def _say_tried_if_idle(self) -> None:
        if self._call_state in ("", "idle"):
            self._say_tried()

    def _say_tried(self) -> None:
        with self._lock:
            tried, self._tried = self._tried, []
        for peer in tried:
            self._announcer.state("tried_to_call", peer=peer)

    def _say_consent(self, peer: str, guest: bool = False) -> None:
        """Whether this side's expressions are described to the other, right after "Connected"."""
        if self._sharing and not self._faults and not guest:  # a guest never receives them
            self._announcer.state("consent_shared", peer=peer)
        else:
            self._announcer.state("consent_private")

    def _on_emotion(self, event: Event) -> None:
        if self._call_state in CALL_OVER:
            # A guest's face analysed as the call ended (its own thread): not after "Call ended.".
            return
        data = event.data
        self._announcer.emotion(
            str(data.get("peer") or ""), str(data["emotion"]), float(data.get("confidence", 1.0)), t=event.t
        )

    def _on_sharing(self, event: Event) -> None:
        peer = str(event.data.get("peer") or "")
        key = sharing_key(event.data)
        self._announcer.state(key, peer=peer)
        # The button's repeat says what the screen shows: why none, or nothing yet after resuming.
        said = self._announcer.phrases.say(key, peer=peer) if event.data.get("paused") else ""
        self._announcer.expression_unknown(peer, said)

    def _on_no_face(self, event: Event) -> None:
        """Not said when it happens (a face leaving the camera for a moment would be chatter), but
        the button's repeat says it rather than the expression the face had."""
        peer = str(event.data.get("peer") or "")
        self._announcer.expression_unknown(
            peer, self._announcer.phrases.say("remote_no_face_said", peer=peer)
        )

    def _on_unpaired(self, event: Event) -> None:
        if self._level >= LEVELS["normal"]:
            self._announcer.state("unpaired", peer=str(event.data.get("peer") or ""))

    def _on_code(self, event: Event) -> None:
        data = event.data
        said = self._announcer.phrases.code(
            str(data.get("purpose")), str(data["code"]), float(data.get("seconds", 0))
        )
        self._announcer.say(said, secret=True)  # heard, never logged

    def _on_locked(self, event: Event) -> None:
        data = event.data
        self._announcer.say(self._announcer.phrases.locked(str(data.get("purpose")), float(data["seconds"])))

    def _on_settings(self, event: Event) -> None:
        settings = event.data.get("settings")
        if isinstance(settings, Mapping) and "share_expressions" in event.data.get("changed", ()):
            self._sharing = bool(settings.get("share_expressions"))
            if self._call_state in IN_CALL:
                self._announcer.state(self._sharing_switched())
        if isinstance(settings, Mapping):
            self._announcer.configure(*from_settings(settings, self._announcer.phrases.labels))

    def _sharing_switched(self) -> str:
        """What the owner hears on switching sharing in a call: a guest never receives expressions,
        so switching on does not share them with the one on the line."""
        if not self._sharing:
            return "sharing_off"
        if self._guest:
            return "sharing_on_guest"
        return "sharing_on_unavailable" if self._faults else "sharing_on"

    def close(self) -> None:
        self._unsubscribe()
        with self._lock:
            for timer in (self._timer, self._tried_timer):
                if timer is not None:
                    timer.cancel()
