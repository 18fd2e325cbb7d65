"""Calls between homes: the unit's side of a relay (Prosody for rendezvous, coturn for media).

``service.py`` wires it into the unit (requests to units in other homes, ICE servers for calls,
requests from them into the web app); ``client.py`` is the XMPP connection (slixmpp) on the call
engine's loop; ``envelope.py`` the signed requests as they travel; ``turn.py`` the STUN/TURN
credentials (XEP-0215); ``contacts.py`` which paired unit has which relay address. The relay's own
deployment is in ``relay/`` at the top of the repository.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time the settings import this package (appliance.relay.address)
    from appliance.config import RelayConfig

# The paths a guest (an anonymous account on the relay's guest host) may reach: its call's signals,
# and whether the unit still has its call (the page asks while it rings: appliance/guests/calls.py).
GUEST_PATH = "/api/guest/signal"
GUEST_CALL_PATH = "/api/guest/call"
GUEST_PATHS = frozenset({GUEST_PATH, GUEST_CALL_PATH})


def is_guest(sender: str, unit_jid: str) -> bool:
    """Whether ``sender`` is an anonymous account on the relay's guest host, ``guests.`` before the
    unit's own host (relay/prosody-host.cfg.lua.template); never without a relay account. Hosts
    compare lower-case: slixmpp writes every sender's so, whatever case the settings use."""
    _, at, host = unit_jid.partition("@")
    return bool(at) and _host(sender) == f"guests.{host.lower()}"


def is_on_relay(sender: str, unit_jid: str) -> bool:
    """Whether ``sender`` is an account on the unit's own relay: a unit's (an account the relay's
    operator made) or a guest's."""
    _, at, host = unit_jid.partition("@")
    return bool(at) and (_host(sender) == host.lower() or is_guest(sender, unit_jid))


def _host(jid: str) -> str:
    return jid.partition("/")[0].partition("@")[2].lower()


class RelayError(Exception):
    """The relay settings cannot be used (the message says which and what to do)."""


class RelayUnavailable(Exception):
    """A request cannot go through the relay now (not connected, the other unit offline or silent)."""


def account(cfg: RelayConfig) -> tuple[str, ssl.SSLContext]:
    """The account's password and the TLS context that checks the relay's certificate, both read
    at start (and by the self-test): settings to fix are said now, not behind every later attempt
    to connect (the client reads the password file again only after the relay refused it).
    Raises RelayError."""
    try:
        password = cfg.password_file.read_text().strip()
    except OSError as e:
        raise RelayError(
            f"cannot read the relay password file {cfg.password_file}: {e.strerror} "
            "(put the password from `relay/unit add` there, or empty [relay] jid)"
        ) from e
    if not password:
        raise RelayError(f"the relay password file {cfg.password_file} is empty")
    cafile = str(cfg.ca_file) if cfg.ca_file else None
    try:
        return password, ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise RelayError(
            f"cannot use the relay's CA file {cafile}: {e} (fix or empty [relay] ca_file)"
        ) from e
