"""Calls between homes: the unit's side of a relay (Prosody for rendezvous, coturn for media).

``service.py`` wires it into the unit (requests to units in other homes, ICE servers for calls,
requests from them into the web app); ``client.py`` is the XMPP connection (slixmpp) on the call
engine's loop; ``envelope.py`` the signed requests as they travel; ``turn.py`` the STUN/TURN
credentials (XEP-0215); ``contacts.py`` which paired unit has which relay address. The relay's own
deployment is in ``relay/`` at the top of the repository.
"""


class RelayError(Exception):
    """The relay settings cannot be used (the message says which and what to do)."""


class RelayUnavailable(Exception):
    """A request cannot go through the relay now (not connected, the other unit offline or silent)."""
