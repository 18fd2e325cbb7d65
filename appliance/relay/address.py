"""Relay accounts (bare JIDs, ``ACCOUNT@HOST``) as the unit takes them: in its settings, typed on the
pairing page, announced by a paired unit, kept for a paired unit.

One rule for all of them, no looser than slixmpp's: an account slixmpp refuses (``bela@relay..test``)
raises InvalidJID deep inside the XMPP client, at every connection or request, where the unit can
only log it. The host comes back lower-case, as slixmpp writes every sender: the same account typed
``bela@Relay.Example.org`` must compare equal to it (whether a sender is a guest, a paired unit).
"""

from __future__ import annotations

import re

# relay/unit's account names (a name and its random part); a host is DNS labels, none empty and
# none starting or ending with a hyphen. Plain strings, to go inside other patterns (RelayConfig,
# the pairing page's address), whose regex engines differ: only what both read alike.
ACCOUNT = r"[a-z0-9][a-z0-9._-]{0,62}"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST = _LABEL + r"(?:\." + _LABEL + r")*"
BARE_JID = ACCOUNT + "@" + HOST
MAX_HOST = 253
EXAMPLE = "name@relay.example.org"


def bare_jid(text: str) -> str:
    """``text`` as slixmpp and the relay write it (the host lower-case). Raises ValueError saying
    why it is not a relay account."""
    host = text.partition("@")[2]
    if not re.fullmatch(BARE_JID, text) or len(host) > MAX_HOST:
        raise ValueError(f"{text!r} is not a relay account like {EXAMPLE}")
    # Here, not at the top: slixmpp (6 MB) loads only on a unit that uses a relay.
    from slixmpp.jid import JID, InvalidJID

    try:
        return str(JID(text).bare)
    except InvalidJID as e:
        raise ValueError(f"{text!r} is not a relay account like {EXAMPLE} ({e})") from e


def normalised(text: str) -> str | None:
    """The account as :func:`bare_jid` writes it, or None when it is not one."""
    try:
        return bare_jid(text)
    except ValueError:
        return None
