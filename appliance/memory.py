"""Keeping a long-running unit's memory small: one malloc arena for all its threads.

glibc gives each thread that allocates its own arena (up to 8 per core), and a freed block in one
thread's arena is never reused by another's. A unit runs about 25 threads (capture, vision, call
engine, encoders, mixer, web workers, ...) that allocate and free frame-sized buffers, so its heap
spreads over a dozen arenas: one arena took a unit in a call from about 305 MB to 265 MB of RSS
here (``benchmarks/memory.py``). Python's GIL serialises most allocation anyway, and the native
libraries' threads (libvpx, FFmpeg, LiteRT) allocate once per frame at most, so sharing one arena
costs no measurable time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Use at most ``arenas`` malloc arenas from now on; call before any thread starts.

    Returns False (and changes nothing) where the C library is not glibc (musl has one heap).
    """
    libc = _glibc()
    if libc is None or libc.mallopt(M_ARENA_MAX, arenas) != 1:
        log.debug("not glibc: malloc arenas left as they are")
        return False
    return True

