"""No speaker: the mixer keeps its real-time pace, and what it mixes goes nowhere.

A unit whose sound device is missing or fails uses this, never a file: call audio (the other
person's voice) must not end up on disk. Announcements still take as long as they would to hear,
so the announcer's timing is unchanged.
"""

from __future__ import annotations

import numpy as np

from appliance.audio.mixer import MixingSpeaker


class SilentSpeaker(MixingSpeaker):
    def __init__(self, *, duck_gain: float = 0.25) -> None:
        super().__init__(duck_gain=duck_gain, paced=True)
        self.start()

    def _open_output(self) -> None:
        """Nothing to open (and, as ``_output`` never fails, never reopened)."""

    def _output(self, block: np.ndarray) -> None:
        """Nothing to play it on; nothing is kept."""

    def _close_output(self) -> None:
        """No device or file to release."""
