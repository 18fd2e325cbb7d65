"""The display's fonts: a TrueType file with the language's letters, shaped for its script.

pygame's built-in font has Latin letters only. Hindi and Bengali need a font with Devanagari or
Bengali letters (the image installs Lohit's; fontconfig names the one for a language) and HarfBuzz
shaping for the script: left to its default, SDL_ttf lays the letters out one by one, so the vowel
sign of "कि" comes after its consonant instead of before it (68 px wide instead of 49) and Bengali's
two-part vowels come apart. ``set_script`` makes SDL_ttf shape as HarfBuzz does for the script.

Such a font may lack Latin letters (Lohit Bengali has none), yet names are often Latin ("Asha"
in a Bengali sentence): a text is drawn in runs, each letter in the language's font when it has
it, else in the built-in one. SDL_ttf draws a box for a letter a font lacks, and its metrics do
not tell (they are the box's), so which letters a font has comes from fontconfig.
"""

from __future__ import annotations

import logging
import subprocess
from itertools import groupby
from pathlib import Path

import pygame

from appliance.words.phrases import SCRIPTS, Phrases

log = logging.getLogger(__name__)


def _init() -> None:
    if not pygame.font.get_init():
        pygame.font.init()


class Fonts:
    """Fonts by pixel size, made once. ``path`` None is pygame's built-in font (Latin only); with
    ``letters``, the letters of ``path``, any other letter is drawn in the built-in font."""

    def __init__(
        self, path: Path | None, script: str = "Latn", letters: frozenset[str] | None = None
    ) -> None:
        _init()
        self.path, self.script, self._letters = path, script, letters
        self._cache: dict[tuple[bool, int], pygame.font.Font] = {}

    def _font(self, own: bool, size: int) -> pygame.font.Font:
        if (own, size) not in self._cache:
            font = pygame.font.Font(str(self.path) if own and self.path else None, size)
            font.set_script(self.script if own else "Latn")
            self._cache[own, size] = font
        return self._cache[own, size]

    def _runs(self, text: str) -> list[tuple[bool, str]]:
        """``text`` cut where the font changes; spaces stay with the run they are in."""
        if self._letters is None:
            return [(True, text)]
        own = [c in self._letters or c.isspace() for c in text]
        return [
            (key, "".join(c for _, c in run))
            for key, run in groupby(zip(own, text, strict=True), lambda p: p[0])
        ]

    def _size(self, runs: list[tuple[bool, str]], size: int) -> tuple[int, int]:
        sizes = [self._font(own, size).size(run) for own, run in runs]
        return sum(w for w, _ in sizes), max(h for _, h in sizes)

    def render(self, text: str, width: int, height: int, colour: tuple[int, int, int]) -> pygame.Surface:
        """``text`` as large as fits in ``width`` x ``height``, on black."""
        runs = self._runs(text)
        size = max(8, height)
        text_w, text_h = self._size(runs, size)
        if text_w > width or text_h > height:
            size = max(8, int(size * min(width / max(text_w, 1), height / max(text_h, 1))))
            text_w, text_h = self._size(runs, size)
        surface = pygame.Surface((text_w, text_h))
        ascent = max(self._font(own, size).get_ascent() for own, _ in runs)
        x = 0
        for own, run in runs:
            font = self._font(own, size)
            surface.blit(font.render(run, True, colour, (0, 0, 0)), (x, ascent - font.get_ascent()))
            x += font.size(run)[0]
        return surface


def letters(path: Path) -> frozenset[str]:
    """The letters ``path`` has, as fontconfig reads them; none without fontconfig or a readable font."""
    try:
        charset = subprocess.run(
            ["fc-query", "--format=%{charset}", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("cannot read the letters of font %s: %s", path, e)
        return frozenset()
    found: set[str] = set()
    for span in charset.split():
        first, _, last = span.partition("-")
        found.update(chr(c) for c in range(int(first, 16), int(last or first, 16) + 1))
    return frozenset(found)


def fontconfig_choice(language: str) -> Path | None:
    """The font fontconfig picks for ``language``; None without fontconfig. It may lack the letters."""
    try:
        found = subprocess.run(
            ["fc-match", "--format=%{file}", f":lang={language}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(found) if found else None


def for_language(phrases: Phrases, configured: Path | None) -> tuple[Fonts, Phrases]:
    """Fonts that can write the phrases' language, and the phrases to show with them: the
    configured font if it has the language's letters, else fontconfig's; English when neither has.
    Latin letters and digits may come from the built-in font."""
    if phrases.language == "en":
        return Fonts(configured), phrases
    needed = {c for c in phrases.characters() if not c.isascii()}
    for path in dict.fromkeys((configured, fontconfig_choice(phrases.language))):
        if path is not None and needed <= (has := letters(path)):
            return Fonts(path, SCRIPTS[phrases.language], has), phrases
    log.warning(
        "no font has the letters of %s (set [display] font, or install fonts-lohit-deva and "
        "fonts-lohit-beng-bengali): the display shows English",
        phrases.language,
    )
    return Fonts(None), Phrases("en", phrases.labels, short=phrases.short)
