"""The display's fonts: a TrueType file with each script's letters, shaped for that script.

pygame's built-in font has Latin letters only. Hindi and Bengali need a font with Devanagari or
Bengali letters (the image installs Lohit's; fontconfig names the one for a language) and HarfBuzz
shaping for the script: left to its default, SDL_ttf lays the letters out one by one, so the vowel
sign of "कि" comes after its consonant instead of before it (68 px wide instead of 49) and Bengali's
two-part vowels come apart. ``set_script`` makes SDL_ttf shape as HarfBuzz does for the script.

One font rarely has every letter a screen shows: Lohit Bengali has no Latin ones, yet names are
often Latin ("Asha" in a Bengali sentence), a name may be in another script, and the line on the
screen when the owner changes the language stays in the old one until it changes. So a text is drawn
in runs, each letter in the first of the faces (the language's own first, then the built-in one,
then the other languages' scripts') that has it. SDL_ttf draws a box for a letter a font lacks, and
its metrics do not tell (they are the box's), so which letters a font has comes from fontconfig.
A letter none of those has (a name in Telugu or Tamil; the built-in font has Cyrillic and Greek)
brings in fontconfig's font for its script (``appliance.words.scripts``) the first time it is
drawn; the image installs Lohit's for the Indian scripts, Amiri for Urdu's Arabic letters, DejaVu
Sans (Hebrew's), and fonts for Sinhala, Thai and Burmese.

Every language the unit speaks is written left to right, and so is each of its lines. Letters
written right to left (an Urdu name) are a run of their own, shaped right to left, and the words of
a name written so are turned around, its first word on the right: the order the Unicode
bidirectional algorithm gives them in such a line (``_seen``). Not all of it: a number after such a
name stays after it, where the algorithm would put it before.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path

import pygame

from appliance.words import scripts
from appliance.words.phrases import SCRIPTS, Phrases

log = logging.getLogger(__name__)
BUILT_IN = Path(pygame.__file__).parent / pygame.font.get_default_font()
MIN_SIZE = 8  # pixels: below this no letter is legible; a text that still does not fit is scaled
MAX_LINES = 6
LAYOUTS_KEPT = 64
FONTS_KEPT = 48
# Where a line may be cut: at spaces, but not between the digits of a code ("4 8 2 9 1 3."), which
# are spaced to be read one by one and on two lines would read as two numbers.
WORD = re.compile(r"\d(?: \d)+\S*|\S+")
RIGHT_TO_LEFT_SCRIPTS = frozenset(scripts.SCRIPTS[language][0] for language in scripts.RIGHT_TO_LEFT)


@dataclass(frozen=True)
class Face:
    path: Path | None  # None: pygame's built-in font
    script: str  # ISO 15924, for HarfBuzz
    letters: frozenset[str]

    @property
    def right_to_left(self) -> bool:
        return self.script in RIGHT_TO_LEFT_SCRIPTS


@dataclass(frozen=True)
class Run:
    """Letters drawn together: in one face, in one direction."""

    face: int
    text: str
    right_to_left: bool


@dataclass(frozen=True)
class Room:
    """Where a text goes: its box, and how tall one of its lines may be."""

    width: int
    height: int
    line_height: int


class Fonts:
    """Fonts by face and pixel size, the recently used kept. A letter no face has is drawn (as a box)
    in the first."""

    def __init__(self, faces: list[Face], more: Callable[[str], Face | None] | None = None) -> None:
        """``more``: the face for a letter none of ``faces`` has (``face_for``), or None."""
        if not pygame.font.get_init():
            pygame.font.init()
        self.faces = faces
        self._more = more
        self._cache: OrderedDict[tuple[int, int, bool], pygame.font.Font] = OrderedDict()
        self._faces_of: dict[str, int] = {}
        self._layouts: dict[tuple[str, Room, int], tuple[int, list[str]]] = {}

    @property
    def path(self) -> Path | None:
        """The font of the language's own letters."""
        return self.faces[0].path

    def _font(self, face: int, size: int, right_to_left: bool = False) -> pygame.font.Font:
        key = (face, size, right_to_left)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            font = pygame.font.Font(str(self.faces[face].path or BUILT_IN), size)
            font.set_script(self.faces[face].script)
            if right_to_left:
                font.set_direction(pygame.DIRECTION_RTL)
            self._cache[key] = font
            # Fitting a text tries many sizes, and each font holds about 100 kB: only the recent stay.
            while len(self._cache) > FONTS_KEPT:
                self._cache.popitem(last=False)
        return self._cache[key]

    def _face_of(self, letter: str) -> int:
        """The first face that has ``letter`` (asked for each letter of each line tried while a text
        is fitted, so kept until a face is added)."""
        if letter not in self._faces_of:
            self._faces_of[letter] = self._find_face(letter)
        return self._faces_of[letter]

    def _find_face(self, letter: str) -> int:
        """A letter written right to left is first looked for in a face of its own script: pygame's
        built-in font has some Arabic letters, which it draws unjoined, and a name came apart
        between the two fonts; DejaVu Sans, Hebrew's font, has Arabic letters but not Urdu's own."""
        rtl = _right_to_left(letter)
        language = scripts.language_of(letter) if rtl else None
        own = scripts.SCRIPTS[language][0] if language else None

        def first(usable: Callable[[Face], bool]) -> int | None:
            matching = (i for i, face in enumerate(self.faces) if letter in face.letters and usable(face))
            return next(matching, None)

        found = first(lambda face: not rtl or face.script == own)
        if found is None and self._more is not None and (face := self._more(letter)) is not None:
            self.faces.append(face)
            self._faces_of.clear()  # a letter drawn in another face until now may be in this one
            found = len(self.faces) - 1
        if found is None and rtl:  # in no script of the table (Arabic's presentation forms, Syriac)
            found = first(lambda face: face.right_to_left)
        if found is None:  # no face of its script
            found = first(lambda face: True)
        return found or 0

    def _runs(self, text: str) -> list[Run]:
        """``text`` cut where the face or the direction changes, in reading order. A space, a joiner
        or a combining mark stays in the run it is in: a joiner or a mark shapes the letter before
        it, and alone in a run of another face it would be drawn apart from it (and has no width).
        Letters written right to left make runs of their own, drawn right to left; digits and
        punctuation among them do not (HarfBuzz would turn "12" into "21"). A space that ends
        such a run goes to the next run."""
        keys: list[tuple[int, bool]] = []
        for letter in text:
            if _follows(letter) and keys:
                keys.append(keys[-1])
            else:
                keys.append((self._face_of(letter), _right_to_left(letter)))
        for i in range(len(text) - 2, -1, -1):  # from the end: a run's last space moves first
            if text[i].isspace() and keys[i][1] and keys[i + 1] != keys[i]:
                keys[i] = keys[i + 1]
        grouped = groupby(zip(keys, text, strict=True), lambda pair: pair[0])
        return [Run(face, "".join(letter for _, letter in run), rtl) for (face, rtl), run in grouped]

    def _size(self, runs: list[Run], size: int) -> tuple[int, int]:
        sizes = [self._font(run.face, size, run.right_to_left).size(run.text) for run in runs]
        return sum(w for w, _ in sizes), max(h for _, h in sizes)

    def render(
        self,
        text: str,
        width: int,
        height: int,
        colour: tuple[int, int, int],
        *,
        line_height: int = 0,
        readable: int = 0,
    ) -> pygame.Surface:
        """``text`` as large as fits in ``width`` x ``height``, on black, each line at most
        ``line_height`` tall (``height`` by default).

        On one line unless that makes its letters smaller than ``readable`` pixels: then cut at
        spaces onto as few lines as reach that size, each line centred. Never wider than ``width``
        (a word too long even at the smallest size is scaled down to fit)."""
        size, lines = self._layout(text, Room(width, height, line_height or height), readable)
        rendered = [self._line(line, size, colour) for line in lines]
        surface = pygame.Surface(
            (max(r.get_width() for r in rendered), sum(r.get_height() for r in rendered))
        )
        y = 0
        for line in rendered:
            surface.blit(line, line.get_rect(centerx=surface.get_width() // 2, top=y))
            y += line.get_height()
        if surface.get_width() > width or surface.get_height() > height:
            scale = min(width / surface.get_width(), height / surface.get_height())
            surface = pygame.transform.smoothscale(
                surface, (max(1, int(surface.get_width() * scale)), max(1, int(surface.get_height() * scale)))
            )
        return surface

    def _line(self, text: str, size: int, colour: tuple[int, int, int]) -> pygame.Surface:
        """One line, each run in its face, on a common baseline, in the order they are seen."""
        runs = _seen(self._runs(text))
        surface = pygame.Surface(self._size(runs, size))
        fonts = [self._font(run.face, size, run.right_to_left) for run in runs]
        ascent = max(font.get_ascent() for font in fonts)
        x = 0
        for run, font in zip(runs, fonts, strict=True):
            width = font.size(run.text)[0]
            if width:  # SDL_ttf refuses to draw a text of no width (a mark that begins a line)
                surface.blit(font.render(run.text, True, colour, (0, 0, 0)), (x, ascent - font.get_ascent()))
            x += width
        return surface

    def _layout(self, text: str, room: Room, readable: int) -> tuple[int, list[str]]:
        """The font size and the lines: the fewest lines whose size reaches ``readable``, else the
        largest size any number of lines allows. Redrawn often (every remote frame), so kept."""
        key = (text, room, readable)
        if key not in self._layouts:
            best = self._largest(text, room, 1)
            for count in range(2, MAX_LINES + 1):
                if best[0] >= readable:
                    break
                wrapped = self._largest(text, room, count)
                best = wrapped if wrapped[0] > best[0] else best
            if len(self._layouts) >= LAYOUTS_KEPT:
                self._layouts.clear()
            self._layouts[key] = best
        size, lines = self._layouts[key]
        return size, list(lines)

    def _largest(self, text: str, room: Room, count: int) -> tuple[int, list[str]]:
        """The largest size at which ``text`` wraps onto at most ``count`` lines within ``room``,
        every line measured at that size (a scaled guess can come out a few pixels too wide)."""
        low, high = MIN_SIZE, max(MIN_SIZE, min(room.height, room.line_height))
        found = self._wrap(text, low, room.width)
        while low < high:
            size = (low + high + 1) // 2
            lines = self._wrap(text, size, room.width)
            if self._fits(lines, size, room, count):
                low, found = size, lines
            else:
                high = size - 1
        return low, found

    def _fits(self, lines: list[str], size: int, room: Room, count: int) -> bool:
        sizes = [self._size(self._runs(line), size) for line in lines]
        return (
            len(lines) <= count
            and all(w <= room.width and h <= room.line_height for w, h in sizes)
            and sum(h for _, h in sizes) <= room.height
        )

    def _wrap(self, text: str, size: int, width: int) -> list[str]:
        """``text`` cut at spaces (not within a code), each line as long as fits in ``width`` at
        ``size`` (greedy)."""
        lines: list[str] = []
        for word in WORD.findall(text):
            longer = f"{lines[-1]} {word}" if lines else word
            if lines and self._size(self._runs(longer), size)[0] <= width:
                lines[-1] = longer
            else:
                lines.append(word)
        return lines or [text]


def _right_to_left(letter: str) -> bool:
    """Whether ``letter`` is written right to left (a letter of Urdu or Hebrew, not their digits)."""
    return unicodedata.bidirectional(letter) in ("R", "AL")


def _seen(runs: list[Run]) -> list[Run]:
    """The runs in the order they are seen, left to right. The line is read left to right, and a
    stretch of words written right to left (from such a run to the last one before a letter written
    left to right: "علی 12 خان") is turned around, as the Unicode bidirectional algorithm turns it:
    its spaces and punctuation are drawn right to left with it, its numbers left to right."""
    seen, i = [], 0
    while i < len(runs):
        if not runs[i].right_to_left:
            seen.append(runs[i])
            i += 1
            continue
        end = i
        for k in range(i + 1, len(runs)):
            if any(unicodedata.bidirectional(c) == "L" for c in runs[k].text):
                break
            end = k if runs[k].right_to_left else end
        stretch = runs[i : end + 1]
        seen += [
            replace(run, right_to_left=not any(c.isdigit() for c in run.text)) for run in reversed(stretch)
        ]
        i = end + 1
    return seen


def _follows(letter: str) -> bool:
    """Whether ``letter`` belongs with the letter before it: a space, ZWJ or ZWNJ, or a combining
    mark (a vowel sign, a virama, an accent)."""
    return letter.isspace() or letter in scripts.JOINERS or unicodedata.category(letter).startswith("M")


def _fontconfig(*argv: str) -> str | None:
    """What a fontconfig command prints; None without fontconfig or when it fails."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("%s failed: %s", argv[0], e)
        return None


# Both are asked once per font or language: the fonts installed do not change while the unit runs,
# and the display asks again at every change of settings.
@functools.cache
def letters(path: Path) -> frozenset[str]:
    """The letters ``path`` has, as fontconfig reads them; none without fontconfig or a readable font."""
    found: set[str] = set()
    for span in (_fontconfig("fc-query", "--format=%{charset}", str(path)) or "").split():
        first, _, last = span.partition("-")
        found.update(chr(c) for c in range(int(first, 16), int(last or first, 16) + 1))
    return frozenset(found)


@functools.cache
def fontconfig_choice(language: str) -> Path | None:
    """The font fontconfig picks for ``language``; None without fontconfig. It may lack the letters."""
    found = (_fontconfig("fc-match", "--format=%{file}", f":lang={language}") or "").strip()
    return Path(found) if found else None


def face_for(letter: str) -> Face | None:
    """fontconfig's font for the script ``letter`` is in, if it has the letter; None for a Latin
    letter or one no font has."""
    language = scripts.language_of(letter)
    if language is None:
        return None
    face = _script_font(language)
    return face if face is not None and letter in face.letters else None


@functools.cache
def _script_font(language: str) -> Face | None:
    path = fontconfig_choice(language)
    return None if path is None else Face(path, scripts.SCRIPTS[language][0], letters(path))


def script_face(language: str, configured: Path | None) -> Face | None:
    """The face for a language's script: the configured font if it has the language's letters,
    else fontconfig's choice if it has them; None when neither has."""
    needed = {c for c in Phrases(language).characters() if not c.isascii()}
    for path in dict.fromkeys((configured, fontconfig_choice(language))):
        if path is not None and needed <= letters(path):
            return Face(path, SCRIPTS[language], letters(path))
    return None


def for_language(phrases: Phrases, configured: Path | None) -> tuple[Fonts, Phrases]:
    """Fonts for the phrases' language, and the phrases to show with them: English when no font
    has the language's letters. The language's face comes first (for English the configured
    font, if any), then the built-in one, then the other languages' faces that were found, then
    those of other scripts as their letters come (``face_for``)."""
    built_in = Face(None, "Latn", letters(BUILT_IN))
    others = {lang: script_face(lang, configured) for lang in SCRIPTS if lang != "en"}
    shown = phrases
    if phrases.language != "en" and others[phrases.language] is None:
        log.warning(
            "no font has the letters of %s (set [display] font, or install fonts-lohit-deva and "
            "fonts-lohit-beng-bengali): the display shows English",
            phrases.language,
        )
        shown = Phrases("en", phrases.labels, short=phrases.short)
    own = others.pop(shown.language, None)
    if shown.language == "en" and configured is not None:
        own = Face(configured, "Latn", letters(configured))
    faces = [face for face in (own, built_in, *others.values()) if face is not None]
    return Fonts(faces, face_for), shown
