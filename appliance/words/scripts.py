"""The scripts a name may be written in besides Latin, and the language each is read in.

A name comes from another unit or a guest, in any script. The pages mark each run of words in one
of these scripts with its language, so a screen reader reads it with that language's voice (its
English one spelt them out, or skipped them), and speech says a run in a script espeak-ng does not
switch to by itself in that language's voice (``appliance.speech.espeak``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from appliance.words.phrases import JOINERS

# Language (an espeak-ng voice and an HTML lang) -> the Unicode ranges of the script it is read in.
# A script several languages share is read in the one most likely among the units' owners: Arabic
# letters as Urdu, Cyrillic as Russian.
SCRIPT_RANGES = {
    "hi": "\u0900-\u097f",  # Devanagari
    "bn": "\u0980-\u09ff",
    "pa": "\u0a00-\u0a7f",  # Gurmukhi
    "gu": "\u0a80-\u0aff",
    "or": "\u0b00-\u0b7f",  # Odia
    "ta": "\u0b80-\u0bff",
    "te": "\u0c00-\u0c7f",
    "kn": "\u0c80-\u0cff",
    "ml": "\u0d00-\u0d7f",
    "si": "\u0d80-\u0dff",
    "ur": "\u0600-\u06ff\u0750-\u077f",  # Arabic letters
    "ru": "\u0400-\u04ff",  # Cyrillic
    "el": "\u0370-\u03ff",
    "hy": "\u0530-\u058f",
    "ka": "\u10a0-\u10ff",
    "th": "\u0e00-\u0e7f",
    "my": "\u1000-\u109f",
    "ko": "\u1100-\u11ff\uac00-\ud7af",  # Hangul
    "ja": "\u3040-\u30ff",  # Hiragana and Katakana
}
# Punctuation inside those ranges (the dandas, Arabic's comma, semicolon, question mark and full
# stop, Greek's question mark and semicolon): never part of a word.
PUNCTUATION = "\u0964\u0965\u060c\u061b\u061f\u06d4\u037e\u0387"


def _words_in(letters: str) -> str:
    """Words in one script (the joiners are part of a spelling: JOINERS) and the spaces between."""
    joiners, letter = "".join(JOINERS), f"(?![{PUNCTUATION}])[{letters}]"
    word = f"[{joiners}]*{letter}(?:{letter}|[{joiners}])*"
    return f"{word}(?:\\s+{word})*"


# One group per language, named by it.
_RUN = re.compile("|".join(f"(?P<{lang}>{_words_in(letters)})" for lang, letters in SCRIPT_RANGES.items()))


def runs(text: str) -> Iterator[tuple[str, int, int]]:
    """Each run of words in one of those scripts in ``text``: its language, start and end."""
    for run in _RUN.finditer(text):
        assert run.lastgroup is not None  # every alternative is a named group
        yield run.lastgroup, run.start(), run.end()
