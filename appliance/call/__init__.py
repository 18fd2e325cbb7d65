"""Calls between two paired units over WebRTC (aiortc), with the emotion data channel.

:mod:`engine` runs the calls on one asyncio loop in its own thread; :mod:`session` is one peer
connection (media, data channel, heartbeat); :mod:`messages` is the data channel's schema;
:mod:`signaling` carries offers and answers (signed HTTP between units, an in-memory pair for
tests); :mod:`http` is the Flask blueprint that receives them; :mod:`media` holds the tracks.
"""

from __future__ import annotations

from typing import Final

# The call engine's states with a call in progress (one can be hung up; the camera runs), and
# those with the other person on the line.
IN_PROGRESS = ("calling", "ringing", "connected", "reconnecting")
IN_CALL = ("connected", "reconnecting")
# The states with no call: nothing of the last call (its expressions, its video) is said or shown.
CALL_OVER = ("ended", "failed", "lost", "idle", "busy")
# The longest a button press or a guest's new call waits for the last call's connections to close
# (under a second; longer with a relay's TURN allocation) before acting as in idle.
CLOSING_WAIT_SECONDS = 3.0
# The events that say whether this unit's expressions can be described: topic -> (the part, whether
# it works now). When one does not, the engine tells the other side why nothing is said of them,
# rather than leave it in silence, and speech does not tell the owner they are shared.
DESCRIBING: Final = {
    "camera.lost": ("camera", False),
    "camera.ready": ("camera", True),
    "camera.recovered": ("camera", True),
    "vision.unavailable": ("vision", False),
    "vision.backend": ("vision", True),
}
# The reason of a call.state "ended" for a call placed here that the other unit declined or let ring
# out (speech and the display say "Asha did not answer.").
NOT_ANSWERED = "not answered"
# The reason of a call.state "ended" for a call that rang here and was not answered, let ring out or
# given up by its caller ("Missed call from Asha.": the owner may have been in another room).
MISSED = "missed"
# The cause of a call.state "failed", beside its reason (the details, for the log): nothing answers
# at the other unit's address or through the relay; the other unit refused this unit's signature, as
# a unit does that no longer has it paired. Any other failure is "The call failed.".
UNREACHABLE = "unreachable"
NOT_KNOWN = "not known"
# The reason of a remote.sharing pause (and the data channel's Sharing.reason) that is not the
# other person's choice: their expressions cannot be described (no model, camera gone).
UNAVAILABLE: Final = "unavailable"


class CallError(Exception):
    """A call cannot be placed or answered; the message says what to do."""


class NotPaired(CallError):
    """The unit asked for is not (or no longer) paired with this one."""
