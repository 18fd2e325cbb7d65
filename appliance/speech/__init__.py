"""Speech: how the unit says things (espeak-ng, tones) and when (the announcer).

The words themselves (templates per language, emotion words) are :mod:`appliance.words`, shared
with the display.
- :mod:`appliance.speech.espeak`: espeak-ng as a subprocess, WAV on stdout parsed into samples.
- :mod:`appliance.speech.tones`: a short generated chime per emotion.
- :mod:`appliance.speech.announcer`: the priority queue and its rules (states first, emotions only
  on a change, above a threshold, rate-limited, dropped when stale).
- :mod:`appliance.speech.narrator`: turns bus events into announcements, including the start-up one.
"""


class SpeechError(Exception):
    """Speech cannot be produced; the message says what to install or change."""
