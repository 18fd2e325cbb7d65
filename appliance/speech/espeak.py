"""espeak-ng as a subprocess: text on stdin, a WAV file on stdout, parsed into samples.

The text goes on stdin, so nothing in it (a name the other unit sent) can be read as an option;
SSML stays off (no ``-m``), and phoneme input, which espeak-ng reads between ``[[`` and ``]]`` in
any text, is broken up before it gets there. Recently said phrases are kept, so a repeated
announcement ("Asha looks happy") starts without waiting for synthesis.

Text is mended just before it goes to espeak-ng: see :func:`for_espeak`.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import threading
import wave
from collections import OrderedDict

import numpy as np

from appliance.speech import SpeechError
from appliance.words import scripts

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
CACHE_SIZE = 64
# Each "[" followed by another: "[[[" becomes "[ [ [", so no two are left side by side.
PHONEME_OPEN = re.compile(r"\[(?=\[)")
# ZWJ and ZWNJ shape a name's letters on the screen; espeak-ng reads them as a letter: the English
# and Hindi voices say "Bengali" in the middle of a Bengali name, and every voice cuts it in two.
UNSPOKEN = dict.fromkeys(map(ord, scripts.JOINERS))
# Bengali letters with a dot below, as Unicode normalisation stores them (base letter + nukta), and
# the precomposed code points espeak-ng 1.51 reads correctly: with the nukta it drops the vowel that
# follows ("jor" for জোড়া), in every voice (a Bengali name in a Hindi sentence: "pr'i" for
# প্রিয়া). Normalisation undoes this mapping, so it is applied last, here.
BENGALI_NUKTA = {"\u09a1\u09bc": "\u09dc", "\u09a2\u09bc": "\u09dd", "\u09af\u09bc": "\u09df"}
# The scripts espeak-ng 1.51 does not switch to by itself inside an English, Hindi or Bengali
# sentence, as it does for Devanagari, Bengali, Tamil or Korean: it spells a name in them letter by
# letter ("Telugu ra, Telugu aa"), or by the letters' names ("Cyrillic a", "Arabic hamza").
SAID_APART = frozenset({"te", "or", "ur", "ru", "el", "ja", "th", "my"})
SILENT = 200  # sample level below which a part of a sentence is silence (int16)
RUN_ON_SECONDS = 0.05  # the pause left between parts said apart, as between words


def for_espeak(text: str) -> str:
    """``text`` as espeak-ng reads it best, and only as text: no ``[[`` (espeak-ng would read what
    follows as phonemes, in every voice: a name "[[k'0l'End@d]]" said as "Kolkata"), no joiners,
    and Bengali ড়, ঢ়, য় as precomposed letters. The same in every voice: a name in any script
    may come in any language's sentence."""
    # The joiners go first: "[", a joiner, "[" would otherwise become "[[" once they are gone.
    text = PHONEME_OPEN.sub("[ ", text.translate(UNSPOKEN))
    for decomposed, precomposed in BENGALI_NUKTA.items():
        text = text.replace(decomposed, precomposed)
    return text


def said_apart(text: str, voice: str) -> list[tuple[str, str]]:
    """``text`` cut into (voice, part): each run of words in a script of SAID_APART, unless it is
    ``voice``'s own, in its language's voice; the rest in ``voice``. Never an empty part."""
    parts, end = [], 0
    for language, start, stop in scripts.runs(text):
        if language in SAID_APART and language != voice:
            parts += [(voice, text[end:start]), (language, text[start:stop])]
            end = stop
    parts.append((voice, text[end:]))
    # Punctuation alone goes with the part before it (with the first part when it leads): said
    # apart, the full stop after a name was a pause more, and "Иван?" lost its question.
    joined: list[tuple[str, str]] = []
    for part_voice, part in parts:
        if joined and not any(c.isalnum() for c in part):
            joined[-1] = (joined[-1][0], joined[-1][1] + part)
        elif joined and not any(c.isalnum() for c in joined[-1][1]):
            joined[-1] = (part_voice, joined[-1][1] + part)
        else:
            joined.append((part_voice, part))
    return [(v, part) for v, part in joined if part.strip()] or [(voice, text)]


def ran_on(samples: np.ndarray, rate: int) -> np.ndarray:
    """``samples`` with the silence after their last sound cut to RUN_ON_SECONDS."""
    heard = np.flatnonzero(np.abs(samples) > SILENT)
    return samples[: heard[-1] + round(RUN_ON_SECONDS * rate)] if heard.size else samples[:0]


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of espeak-ng's WAV output (its header's length fields are placeholders)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise SpeechError("espeak-ng wrote audio that is not 16-bit mono")
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise SpeechError(f"espeak-ng did not write a WAV file: {e}") from e
    return np.frombuffer(frames[: len(frames) // 2 * 2], "<i2").copy(), rate


class Espeak:
    def __init__(self, rate_wpm: int = 160, executable: str | None = None) -> None:
        path = executable or shutil.which("espeak-ng")
        if path is None:
            raise SpeechError("espeak-ng not found: install the espeak-ng package")
        self._exe = path
        self._rate = rate_wpm
        self._cache: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: str = "en") -> tuple[np.ndarray, int]:
        """int16 mono samples of ``text`` spoken with espeak-ng's ``voice``, and their sample rate."""
        key = (voice, text)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        pieces = [self._run(part_voice, part) for part_voice, part in said_apart(text, voice)]
        rate = pieces[-1][1]
        if any(r != rate for _, r in pieces):
            raise SpeechError("espeak-ng's voices wrote different sample rates")
        # Each piece ends in the pause of a sentence's end: all but the last are cut short, so
        # that the parts run on as one sentence.
        ends = [ran_on(samples, rate) for samples, _ in pieces[:-1]]
        result = np.concatenate([*ends, pieces[-1][0]]), rate
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    def phonemes(self, text: str, voice: str = "en") -> str:
        """The phonemes espeak-ng says for ``text`` (``-x``), prepared exactly as for speaking: a
        part said apart in its own voice is marked as espeak-ng marks a switch, "(te)r'a:mu(en)"."""
        said = []
        for part_voice, part in said_apart(text, voice):
            phonemes = self._espeak(["-q", "-x"], part_voice, part).decode("utf-8", "replace").strip()
            said.append(phonemes if part_voice == voice else f"({part_voice}){phonemes}({voice})")
        return " ".join(said)

    def _run(self, voice: str, text: str) -> tuple[np.ndarray, int]:
        return parse_wav(self._espeak(["--stdout"], voice, text))

    def _espeak(self, mode: list[str], voice: str, text: str) -> bytes:
        args = [self._exe, *mode, "-v", voice, "-s", str(self._rate)]
        try:
            proc = subprocess.run(
                args,
                input=for_espeak(text).encode("utf-8"),
                capture_output=True,
                timeout=TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as e:
            raise SpeechError(
                f"espeak-ng took over {TIMEOUT_SECONDS:.0f} s: is the machine overloaded?"
            ) from e
        except OSError as e:
            raise SpeechError(f"cannot run espeak-ng ({self._exe}): {e.strerror}") from e
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise SpeechError(
                f"espeak-ng failed for voice {voice!r}: {err} (list voices: espeak-ng --voices)"
            )
        return proc.stdout
