"""The Pi: full screen through SDL's kmsdrm driver (pygame-ce), straight to the display, no desktop.

Not exercised here (no DRM device); the pictures it shows are the ones the off-screen tests check.
"""

from __future__ import annotations

import os

import pygame

from appliance.display import DisplayError


class KmsdrmScreen:
    name = "kmsdrm"

    def __init__(self) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "kmsdrm")
        try:
            pygame.display.init()
            self._window = pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
        except pygame.error as e:
            pygame.display.quit()
            raise DisplayError(
                f"cannot open the screen with SDL kmsdrm: {e} (is the user in the video group?)"
            ) from e
        pygame.mouse.set_visible(False)
        self.size = self._window.get_size()

    def show(self, picture: pygame.Surface, text: str) -> None:  # the text is for off-screen readers
        pygame.event.pump()  # SDL expects its queue to be drained
        self._window.blit(picture, (0, 0))
        pygame.display.flip()

    def close(self) -> None:
        pygame.display.quit()
