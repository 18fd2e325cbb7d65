"""glibc's malloc as a unit tunes it: a freed video frame does not raise the mmap threshold, so the
next frame has its own mapping again (returned to the system when freed) instead of a heap hole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.memory import MALLINFO

from .call_unit import ROOT

FRAMES = (
    MALLINFO
    + """
import sys
import numpy as np
from appliance.call.engine import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
np.empty((480, 640, 3), np.uint8).fill(1)  # a 900 KiB frame, used and freed
before = libc.mallinfo2().hblks
frame = np.ones((480, 640, 3), np.uint8)  # the next one
print(libc.mallinfo2().hblks - before)
"""
)


def new_mappings(mode: str) -> int:
    """How many mappings of its own the second frame got (0: it is in a heap)."""
    done = subprocess.run(
        [sys.executable, "-c", FRAMES, mode], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_frame_after_a_freed_frame_is_mapped_on_its_own() -> None:
    assert new_mappings("untuned") == 0  # glibc's own behaviour: the second frame is in the heap
    assert new_mappings("tuned") == 1
