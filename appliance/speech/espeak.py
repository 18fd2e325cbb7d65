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
from appliance.words.phrases import JOINERS

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
CACHE_SIZE = 64
# Each "[" followed by another: "[[[" becomes "[ [ [", so no two are left side by side.
PHONEME_OPEN = re.compile(r"\[(?=\[)")
# ZWJ and ZWNJ shape a name's letters on the screen; espeak-ng reads them as a letter: the English
# and Hindi voices say "Bengali" in the middle of a Bengali name, and every voice cuts it in two.
UNSPOKEN = dict.fromkeys(map(ord, JOINERS))
# Bengali letters with a dot below, as Unicode normalisation stores them (base letter + nukta), and
# the precomposed code points espeak-ng 1.51 reads correctly: with the nukta it drops the vowel that
# follows ("jor" for জোড়া), in every voice (a Bengali name in a Hindi sentence: "pr'i" for
# প্রিয়া). Normalisation undoes this mapping, so it is applied last, here.
BENGALI_NUKTA = {"\u09a1\u09bc": "\u09dc", "\u09a2\u09bc": "\u09dd", "\u09af\u09bc": "\u09df"}


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
        result = self._run(key[0], text)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    def phonemes(self, text: str, voice: str = "en") -> str:
        """The phonemes espeak-ng says for ``text`` (``-x``), prepared exactly as for speaking."""
        return self._espeak(["-q", "-x"], voice, text).decode("utf-8", "replace").strip()

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
