"""What the pages say: outcomes, errors, the call state and the unit's parts, in the owner's words.

The owner often hears the pages through a screen reader, so an error names the field and says what
to type, a lockout says what is locked and for how many minutes, and nothing reads as a Python
value (no dicts, no exception text, no 32-digit ids).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import render_template
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from appliance.call import CallError, NotPaired
from appliance.events import Event
from appliance.pairing.codes import CodeError, CodeExpired, CodeLocked
from appliance.pairing.service import PairingError
from appliance.state import SettingsError
from appliance.web.schemas import BadRequest
from appliance.words.phrases import Phrases, relay_key

PAGE_ERRORS = (BadRequest, PairingError, CodeError, SettingsError, CallError)
ENGLISH = Phrases("en")

# Form fields as their labels name them, for the error summary.
FIELD_NAMES = {
    "address": "The other unit's address",
    "code": "Code",
    "display_name": "Name of this unit",
    "volume": "Volume",
    "announcements": "Announcements",
    "verbosity": "How much is said",
    "voice_language": "Voice language",
    "to": "Unit to call",
}
CALL_STATES = {
    "idle": "No call.",
    "calling": "Calling. Waiting for the other unit to answer.",
    "ringing": "Someone is calling. Press Answer to talk.",
    "connected": "In a call.",
    "reconnecting": "The connection dropped: reconnecting.",
    "ended": "The call ended.",
    "failed": "The call failed.",
    "busy": "The other unit is busy.",
    "lost": "The connection was lost.",
    "unavailable": "Calling is not available on this unit.",
}
CAMERAS = {"pattern": "A test picture (no camera is working)", "none": "No camera"}


@dataclass(frozen=True)
class Outcome:
    """What a page says after an action: ``kind`` info, error or question; ``fields`` name -> what to do."""

    text: str
    kind: str = "info"
    fields: dict[str, str] = field(default_factory=dict)


def error_page(e: HTTPException) -> ResponseReturnValue:
    said = "There is no page at this address." if e.code == 404 else (e.description or e.name)
    outcome = Outcome(said, "error")
    return render_template("error.html", code=e.code, outcome=outcome), e.code or 500


def page_status(outcome: Outcome | None) -> int:
    """A page that refused what was sent says so in its HTTP status too (422), not only in words."""
    return 422 if outcome is not None and outcome.kind == "error" else 200


def sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def duration(seconds: float) -> str:
    """A time said plainly: seconds, minutes, or hours for long ones (a login lasts hours)."""
    if seconds >= 90 * 60:
        hours = round(seconds / 3600)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return ENGLISH.duration(seconds)


def time_left(seconds: float) -> str:
    """How long something still works, never more than it has (``duration`` rounds minutes to the
    nearest: 95 s would be "2 minutes"): seconds below two minutes, whole minutes from there."""
    whole = round(seconds)
    if whole < 120:
        return f"{max(1, whole)} second{'s' if whole > 1 else ''}"
    return duration(60 * (whole // 60))


def problem(
    e: Exception, *, peer: str = "", field_name: str = "", address: str = "", code_seconds: float = 120
) -> Outcome:
    """An error as the page says it; ``field_name`` is the field it is about when it has one."""
    if isinstance(e, BadRequest) and e.fields:
        return _bad_fields(e.fields)
    if isinstance(e, CodeLocked):
        return Outcome(
            f"{_too_many(e)}: logging in to this unit is locked for {duration(e.seconds)}. "
            "Try again after that.",
            "error",
        )
    if isinstance(e, CodeExpired):
        return _on_field(
            f"That code no longer works (a code works for {duration(code_seconds)}). "
            'Press "Ask the unit for a code" for a new one.',
            "code",
        )
    if isinstance(e, CodeError):
        left = str(e).removeprefix("wrong code: ")
        return _on_field(
            f"That is not the code the unit is saying: {left}. Type the six digits again.", "code"
        )
    if isinstance(e, PairingError):
        return _pairing(e, peer or "the other unit", field_name, address, code_seconds)
    return _plain(e)


def _plain(e: Exception) -> Outcome:
    """Any other refusal, as the sentence it is; but the call engine names a unit it does not know as
    the page sent it, which on a page from before an unpairing is its 32-digit id."""
    if isinstance(e, NotPaired):
        return Outcome("That unit is no longer paired with this one.", "error")
    return Outcome(sentence(str(e)), "error")


def _too_many(e: Exception) -> str:
    """What was too many, from a lockout's message ("too many code requests: try again in 300 seconds")."""
    found = re.search(r"too many [a-z ]+?(?=:)", str(e))
    return sentence(found.group(0))[:-1] if found else "Too many wrong codes"


def _on_field(text: str, name: str) -> Outcome:
    return Outcome(text, "error", {name: text} if name else {})


def _bad_fields(fields: Mapping[str, str]) -> Outcome:
    names = [FIELD_NAMES.get(f, f) for f in fields]
    if len(names) == 1:
        return Outcome(
            f"{names[0]}: {next(iter(fields.values()))} Nothing was changed.", "error", dict(fields)
        )
    return Outcome(
        f"Nothing was changed: {len(names)} answers need changing: {', '.join(names)}.", "error", dict(fields)
    )


def _pairing(e: PairingError, peer: str, field_name: str, address: str, code_seconds: float) -> Outcome:
    if e.status == 429 and isinstance(e.details.get("seconds"), int):
        return Outcome(
            f"{_too_many(e)}: pairing with {peer} is locked for {duration(e.details['seconds'])}. "
            "Try again after that.",
            "error",
        )
    if field_name == "address" and (e.status == 502 or "not an emocall" in str(e)):
        return _unit_not_found(e, address)
    if e.status == 502:
        return Outcome(
            f"Lost contact with {peer} while pairing. Ask it for a new code and try again.", "error"
        )
    if e.status == 403 and str(e).startswith("wrong code"):
        left = str(e).removeprefix("wrong code").removeprefix(": ")  # "4 tries left", when it said
        said = f"That is not the code {peer} is saying" + (f": {left}" if left else "")
        return _on_field(f"{said}. Type the six digits again.", "code")
    if e.status == 410:
        return Outcome(
            f"The code from {peer} no longer works (a code works for {duration(code_seconds)}). "
            f"Press “Ask it for a code” below for a new one: {peer}'s address is filled in.",
            "error",
        )
    return _on_field(sentence(str(e)), field_name)


def _unit_not_found(e: PairingError, address: str) -> Outcome:
    found = (
        f"Something answered at {address}, but it is not an emocall unit."
        if "not an emocall" in str(e)
        else f"No unit answered at {address}."
    )
    return _on_field(
        f"{found} Check the address on the other unit's display (hold its button to hear it said), "
        "that it is switched on and on this network, then try again.",
        "address",
    )


def expression(event: Event) -> str:
    """An expression event as a sentence: "Bela looks happy." or "Your expression: Happy."."""
    label = str(event.data.get("emotion", ""))
    if event.topic == "remote.emotion":
        return ENGLISH.emotion(str(event.data.get("peer") or ""), label)
    return f"Your expression: {ENGLISH.word(label)}."


def unit_details(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The status provider's facts as (term, words) for the status page; the call state is elsewhere."""
    details = []
    if "camera" in status:
        details.append(("Camera", CAMERAS.get(str(status["camera"]), str(status["camera"]))))
    vision = status.get("vision")
    if isinstance(vision, Mapping):
        details.extend(_vision(vision))
    if "button" in status:
        button = "Working." if status["button"] else "None working: calls are made, answered and ended here."
        details.append(("Call button", button))
    relay = status.get("relay")
    if isinstance(relay, Mapping):
        details.append(("Calls outside the home", relay_words(relay)))
    shown = {"camera", "vision", "call", "events", "name", "unit_id", "address", "version", "button", "relay"}
    for key, value in status.items():
        # A flag would read as a Python value ("True"): each one the status gives is worded above.
        if key not in shown and isinstance(value, str | int | float) and not isinstance(value, bool):
            details.append((key.replace("_", " ").capitalize(), str(value)))
    return details


def relay_words(relay: Mapping[str, Any]) -> str:
    """The relay connection (``Relay.status``) in words: a refused or taken account in the words the
    unit says and shows (``relay_key``), with what to do."""
    state = relay.get("state")
    if state == "off":
        return "No relay: calls stay in the home."
    if state == "connected":
        online = len(relay.get("online") or ())
        units = "1 paired unit" if online == 1 else f"{online} paired units"
        return f"Working: connected to the relay; {units} online there."
    if state == "connecting":
        return "This unit is not connected to its relay right now; it keeps trying."
    return ENGLISH.say(relay_key(relay))


def _vision(vision: Mapping[str, Any]) -> list[tuple[str, str]]:
    if not vision.get("available"):
        return [("Expressions", sentence(f"not recognised: {vision.get('reason') or 'not started'}"))]
    reasons = vision.get("reasons")
    why = reasons.get("classifier") if isinstance(reasons, Mapping) else None
    where = "the Coral" if "edgetpu" in str(vision.get("classifier", "")).lower() else "the processor"
    said = f"Recognised on {where}" + (f" ({why})" if why else "") + "."
    return [("Expressions", said), ("Faces found by", str(vision.get("detector", "unknown")))]
