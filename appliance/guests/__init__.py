"""Guests who call the unit from a browser, with an invite link the owner sends them.

``invites.py`` makes, lists, revokes and checks the invites (signed by the unit, kept in its state
store); ``pages.py`` is the owner's page for them (``/guests``); ``calls.py`` lets a guest's offer,
delivered by the relay, into the call engine; ``vision.py`` describes the guest's face from their
video; ``service.py`` builds these for the composition root. The guest's own page is served by the
relay (``relay/guest/``).
"""
