"""The large-type display: remote video, the other person's expression in very large high-contrast
type, the call state and the unit names, readable from across a room.

:mod:`appliance.display.layout` draws one picture (a pygame Surface) from a :class:`Scene`;
:mod:`appliance.display.view` keeps the scene up to date from events and redraws it in its own
thread; a screen backend shows it: :mod:`appliance.display.offscreen` (software mode, PNG
snapshots) or :mod:`appliance.display.kmsdrm` (the Pi's screen: a DRM dumb buffer, no desktop).
"""

from __future__ import annotations

import os
from typing import Protocol

# pygame prints a greeting on import; it would land in `emocall selftest --json` output.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pygame


class DisplayError(Exception):
    """The display cannot be used; the message says what to check."""


class Screen(Protocol):
    name: str
    size: tuple[int, int]

    def show(self, picture: pygame.Surface, text: str) -> None:
        """Put a finished picture on the screen (or keep it, off-screen).

        ``text`` is what the picture says, a line per element; the off-screen backend writes it
        beside its snapshot so tests and scripts can read the screen without OCR.
        """

    def close(self) -> None: ...
