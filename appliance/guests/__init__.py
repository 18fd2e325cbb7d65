"""Guests who call the unit from a browser, with an invite link the owner sends them.

``invites.py`` makes, lists, revokes and checks the invites (signed by the unit, kept in its state
store); ``pages.py`` is the owner's page for them (``/guests``).
"""
