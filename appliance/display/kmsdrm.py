"""The Pi: full screen through SDL's kmsdrm driver (pygame-ce), straight to the display, no desktop.

SDL's kmsdrm output goes through its GLES2 renderer, whose context belongs to the thread that made
it: opening the screen on one thread and flipping it on another gives a blank screen. So this
screen owns one thread that opens, shows and closes it; ``show()`` only hands it the newest
picture. The thread is checked here with SDL's offscreen driver; kmsdrm itself needs a DRM device
(the SD image's VM test opens it on a virtual GPU).

A screen slow to open (the image's emulated VM, busy starting every part, took more than 30 s;
idle, 2.9 s) is not given up: the unit starts without waiting longer, and the screen shows the
newest picture, scaled to its mode, once it is open. Only an error from SDL means no screen.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import pygame

from appliance.display import DisplayError

log = logging.getLogger(__name__)

# How long the unit's start waits for the screen (an error from SDL comes within it; a slow screen
# goes on opening after it).
OPEN_SECONDS = 30.0


class KmsdrmScreen:
    name = "kmsdrm"

    def __init__(self, driver: str = "kmsdrm", size: tuple[int, int] = (800, 480)) -> None:
        self._driver = driver
        self._cond = threading.Condition()
        self._picture: pygame.Surface | None = None
        self._stop = False
        self._opened = threading.Event()
        self._error: str | None = None
        self.size = size  # what pictures are drawn at until the screen says its own
        self.shown = 0  # pictures put on the screen so far
        self._started = time.monotonic()
        self._late = False  # the start stopped waiting: what the open finds is logged here
        self._thread = threading.Thread(target=self._run, name="screen", daemon=True)
        self._thread.start()
        if not self._opened.wait(OPEN_SECONDS):
            self._late = True
            log.warning(
                "the screen has not opened after %g s (SDL %s); it shows the newest picture when it does",
                OPEN_SECONDS,
                driver,
            )
        elif self._error is not None:
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
                    if picture.get_size() != window.get_size():  # drawn before the screen opened
                        picture = pygame.transform.smoothscale(picture, window.get_size())
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
            if self._late:
                log.error("%s: no picture", self._error)
            self._opened.set()
            return None
        self.size = window.get_size()
        if self._late:
            log.info(
                "the screen opened after %.1f s (SDL %s)", time.monotonic() - self._started, self._driver
            )
        self._opened.set()
        return window

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
