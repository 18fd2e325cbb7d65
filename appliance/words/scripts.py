"""The scripts a name may be written in besides Latin, and the language each is read in.

A name comes from another unit or a guest, in any script. The pages mark each run of words in one
of these scripts with its language, so a screen reader reads it with that language's voice (its
English one spelt them out, or skipped them), and speech says a run in a script espeak-ng does not
switch to by itself in that language's voice (``appliance.speech.espeak``).
"""

from __future__ import annotations

import re
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
    "ru": ("Cyrl", "\u0400-\u04ff"),
    "el": ("Grek", "\u0370-\u03ff"),
    "hy": ("Armn", "\u0530-\u058f"),
    "ka": ("Geor", "\u10a0-\u10ff"),
    "th": ("Thai", "\u0e00-\u0e7f"),
    "my": ("Mymr", "\u1000-\u109f"),
    "ko": ("Hang", "\u1100-\u11ff\uac00-\ud7af"),
    "ja": ("Kana", "\u3040-\u30ff"),  # Hiragana and Katakana
}
RIGHT_TO_LEFT = frozenset({"ur"})
# Punctuation inside those ranges (the dandas, Arabic's comma, semicolon, question mark and full
# stop, Greek's question mark and semicolon): never part of a word.
PUNCTUATION = "\u0964\u0965\u060c\u061b\u061f\u06d4\u037e\u0387"


def _words_in(letters: str) -> str:
    """Words in one script (the joiners are part of a spelling: JOINERS) and the spaces between."""
    joiners, letter = "".join(JOINERS), f"(?![{PUNCTUATION}])[{letters}]"
    word = f"[{joiners}]*{letter}(?:{letter}|[{joiners}])*"
    return f"{word}(?:\\s+{word})*"


# One group per language, named by it.
_RUN = re.compile("|".join(f"(?P<{lang}>{_words_in(letters)})" for lang, (_, letters) in SCRIPTS.items()))
_LETTER = {lang: re.compile(f"[{letters}]") for lang, (_, letters) in SCRIPTS.items()}


def runs(text: str) -> Iterator[tuple[str, int, int]]:
    """Each run of words in one of those scripts in ``text``: its language, start and end."""
    for run in _RUN.finditer(text):
        assert run.lastgroup is not None  # every alternative is a named group
        yield run.lastgroup, run.start(), run.end()


def language_of(letter: str) -> str | None:
    """The language of the script ``letter`` is in; None for Latin and the scripts not listed."""
    return next((lang for lang, pattern in _LETTER.items() if pattern.match(letter)), None)
