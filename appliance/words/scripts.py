"""The scripts a name may be written in besides Latin, and the language each is read in.

A name comes from another unit or a guest, in any script. The pages mark each run of words in one
of these scripts with its language, so a screen reader reads it with that language's voice (its
English one spelt them out, or skipped them), and speech says a run in a script espeak-ng does not
switch to by itself in that language's voice (``appliance.speech.espeak``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

JOINERS = ("\u200c", "\u200d")  # zero-width non-joiner and joiner: part of how a name is spelled
# Language (an espeak-ng voice and an HTML lang) -> its script (ISO 15924, for HarfBuzz's shaping on
# the screen) and the script's Unicode ranges. A script several languages share is read in the one
# most likely among the units' owners: Arabic letters as Urdu, Cyrillic as Russian.
SCRIPTS: dict[str, tuple[str, str]] = {
    "hi": ("Deva", "\u0900-\u097f"),
    "bn": ("Beng", "\u0980-\u09ff"),
    "pa": ("Guru", "\u0a00-\u0a7f"),
    "gu": ("Gujr", "\u0a80-\u0aff"),
    "or": ("Orya", "\u0b00-\u0b7f"),
    "ta": ("Taml", "\u0b80-\u0bff"),
    "te": ("Telu", "\u0c00-\u0c7f"),
    "kn": ("Knda", "\u0c80-\u0cff"),
    "ml": ("Mlym", "\u0d00-\u0d7f"),
    "si": ("Sinh", "\u0d80-\u0dff"),
    "ur": ("Arab", "\u0600-\u06ff\u0750-\u077f"),
    "he": ("Hebr", "\u0590-\u05ff"),
    "ru": ("Cyrl", "\u0400-\u04ff"),
    "el": ("Grek", "\u0370-\u03ff"),
    "hy": ("Armn", "\u0530-\u058f"),
    "ka": ("Geor", "\u10a0-\u10ff"),
    "th": ("Thai", "\u0e00-\u0e7f"),
    "my": ("Mymr", "\u1000-\u109f"),
    "ko": ("Hang", "\u1100-\u11ff\uac00-\ud7af"),
    "ja": ("Kana", "\u3040-\u30ff"),  # Hiragana and Katakana
}
RIGHT_TO_LEFT = frozenset({"ur", "he"})
# Combining marks of no script of their own (the accents of a Greek or Cyrillic name typed
# decomposed): part of the word they follow.
MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"


def _punctuation(letters: str) -> str:
    """The punctuation and symbols in ``letters``'s ranges (the dandas, Arabic's comma, Burmese's
    full stop): never part of a word."""
    bounds = re.findall(r"(.)-(.)", letters)
    found = (chr(c) for first, last in bounds for c in range(ord(first), ord(last) + 1))
    return "".join(c for c in found if unicodedata.category(c)[0] in "PS")


def _words_in(letters: str) -> str:
    """Words in one script (the joiners and accents are part of a spelling) and the spaces between."""
    stops = re.escape(_punctuation(letters))
    joiners, letter = "".join(JOINERS), (f"(?![{stops}])" if stops else "") + f"[{letters}]"
    word = f"[{joiners}]*{letter}(?:{letter}|[{joiners}{MARKS}])*"
    return f"{word}(?:\\s+{word})*"


# One group per language, named by it.
_RUN = re.compile("|".join(f"(?P<{lang}>{_words_in(letters)})" for lang, (_, letters) in SCRIPTS.items()))
_LETTER = {lang: re.compile(f"[{letters}]") for lang, (_, letters) in SCRIPTS.items()}


def runs(text: str) -> Iterator[tuple[str, int, int]]:
    """Each run of words in one of those scripts in ``text``: its language, start and end. Runs of
    one language with only spaces and punctuation between them are one: "أحمد، علي" marked as
    two was laid out left to right on a page, the first name on the left."""
    last: tuple[str, int, int] | None = None
    for run in _RUN.finditer(text):
        assert run.lastgroup is not None  # every alternative is a named group
        if last is not None and last[0] == run.lastgroup and not _has_letters(text[last[2] : run.start()]):
            last = (last[0], last[1], run.end())
            continue
        if last is not None:
            yield last
        last = run.lastgroup, run.start(), run.end()
    if last is not None:
        yield last


def _has_letters(text: str) -> bool:
    return any(c.isalnum() for c in text)


def language_of(letter: str) -> str | None:
    """The language of the script ``letter`` is in; None for Latin and the scripts not listed."""
    return next((lang for lang, pattern in _LETTER.items() if pattern.match(letter)), None)
