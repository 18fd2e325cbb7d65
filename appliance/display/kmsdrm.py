"""The Pi: full screen through SDL's kmsdrm driver (pygame-ce), straight to the display, no desktop.

SDL's kmsdrm output goes through its GLES2 renderer, whose context belongs to the thread that made
it: opening the screen on one thread and flipping it on another gives a blank screen. So this
screen owns one thread that opens, shows and closes it; ``show()`` only hands it the newest
picture. The thread is checked here with SDL's offscreen driver; kmsdrm itself needs a DRM device
(the SD image's VM test draws through it on a virtual GPU).
"""

from __future__ import annotations

import os
import threading

import pygame

from appliance.display import DisplayError

# Under the SD image's emulated test VM, opening through kmsdrm took longer than 10 s.
OPEN_SECONDS = 30.0


class KmsdrmScreen:
    name = "kmsdrm"

    def __init__(self, driver: str = "kmsdrm") -> None:
        self._driver = driver
        self._cond = threading.Condition()
        self._picture: pygame.Surface | None = None
        self._stop = False
        self._opened = threading.Event()
        self._error: str | None = None
        self.size = (0, 0)
        self.shown = 0  # pictures put on the screen so far
        self._thread = threading.Thread(target=self._run, name="screen", daemon=True)
        self._thread.start()
        if not self._opened.wait(OPEN_SECONDS):
            self.close()
            raise DisplayError(f"the screen did not open within {OPEN_SECONDS:g} s (SDL {driver})")
        if self._error is not None:
            raise DisplayError(self._error)

    def show(self, picture: pygame.Surface, text: str) -> None:  # the text is for off-screen readers
        with self._cond:
            self._picture = picture  # the newest picture wins
            self._cond.notify()

    def _run(self) -> None:
        window = self._open()
        if window is None:
            return
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._picture is not None or self._stop, timeout=0.5)
                    picture, self._picture = self._picture, None
                    if self._stop:
                        return
                pygame.event.pump()  # SDL expects its queue to be drained, on the thread that opened it
                if picture is not None:
                    window.blit(picture, (0, 0))
                    pygame.display.flip()
                    self.shown += 1
        finally:
            pygame.display.quit()

    def _open(self) -> pygame.Surface | None:
        os.environ["SDL_VIDEODRIVER"] = self._driver
        try:
            pygame.display.init()
            window = pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
            pygame.mouse.set_visible(False)
        except pygame.error as e:
            pygame.display.quit()
            self._error = (
                f"cannot open the screen with SDL {self._driver}: {e} "
                "(is the user in the video and render groups? are libgbm1, libegl1 and libgles2 installed?)"
            )
            self._opened.set()
            return None
        self.size = window.get_size()
        self._opened.set()
        return window

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
