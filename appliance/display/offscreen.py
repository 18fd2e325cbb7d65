"""Software mode: the display drawn off-screen; the newest picture is kept and written as PNG."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pygame

from appliance.display import DisplayError

log = logging.getLogger(__name__)


class OffscreenScreen:
    name = "offscreen"

    def __init__(
        self, size: tuple[int, int], snapshot_file: Path | None = None, every_s: float = 0.0
    ) -> None:
        self.size = size
        self._file, self._every = snapshot_file, every_s
        self._lock = threading.Lock()
        self._picture: pygame.Surface | None = None
        self._text = ""
        self._next_write = 0.0

    def show(self, picture: pygame.Surface, text: str) -> None:
        with self._lock:
            self._picture = picture
            changed, self._text = text != self._text, text
        if changed and self._file is not None:
            self._write_text(self._file.with_suffix(".txt"), text)
        if self._file is not None and self._every > 0 and time.monotonic() >= self._next_write:
            self._next_write = time.monotonic() + self._every
            self.snapshot(self._file)

    def snapshot(self, path: Path) -> Path:
        """Write the picture on screen now as a PNG (atomically: readers never see half a file)."""
        with self._lock:
            picture = self._picture
            if picture is None:
                raise DisplayError("nothing has been drawn yet")
            tmp = path.with_name(path.stem + ".tmp.png")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                pygame.image.save(picture, str(tmp))
                tmp.replace(path)
            except (OSError, pygame.error) as e:
                raise DisplayError(f"cannot write the display snapshot {path}: {e}") from e
        return path

    def _write_text(self, path: Path, text: str) -> None:
        """What the screen says, replaced atomically, so a reader never sees half of it."""
        tmp = path.with_name(path.stem + ".tmp.txt")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as e:
            log.warning("cannot write the display text %s: %s", path, e)

    def close(self) -> None:
        with self._lock:
            self._picture = None
