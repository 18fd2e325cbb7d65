"""Saves what the screen's controller scans out, read inside the VM: the primary plane's framebuffer.

    python3 scanout.py OUT.png [--large-yellow]   (as root, in the booted image, with the unit's venv)

The boot test reads the framebuffer on the guest's side, as the display controller scans it out
(QEMU's screendump showed black for buffers that Mesa's software GL drew, before the unit drew
without GL): DRM's plane list (all planes, once the client asks for universal planes) gives the framebuffer on
the screen (the largest one shown: the cursor plane has one too), GETFB a handle to it (root only),
MAP_DUMB an offset to mmap it by. Prints its size and how much of it is drawn over the background
(the most common colour); exits 2 when that is under MIN_DRAWN: a blank screen, one colour, or a
console line or two, never the unit's large type. With ``--large-yellow`` it also wants yellow type
(a code, an expression) at least LARGE of the screen's height tall, and exits 2 without it.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import sys

import numpy as np
import pygame

from appliance.display.kmsdrm import MAP_DUMB, FbCmd, MapDumb, iowr
from appliance.display.layout import YELLOW

CARD = "/dev/dri/card0"
MIN_DRAWN = 0.01  # the console's two lines are 0.1 % of a 1280x800 screen
LARGE = 0.15  # layout.py gives the code or the expression the bottom third; its glyphs fill half of it
UNIVERSAL_PLANES = 2  # DRM_CLIENT_CAP_UNIVERSAL_PLANES: list primary and cursor planes too


class ClientCap(ctypes.Structure):
    _fields_ = [("capability", ctypes.c_uint64), ("value", ctypes.c_uint64)]


class PlaneRes(ctypes.Structure):
    _fields_ = [("plane_id_ptr", ctypes.c_uint64), ("count_planes", ctypes.c_uint32)]  # 16 bytes, padded


class Plane(ctypes.Structure):
    _fields_ = [
        *((n, ctypes.c_uint32) for n in ("plane_id", "crtc_id", "fb_id", "possible_crtcs", "gamma_size")),
        ("count_format_types", ctypes.c_uint32),
        ("format_type_ptr", ctypes.c_uint64),
    ]


# The read side of what the unit's screen writes; the same kernel structures.
SET_CLIENT_CAP = iowr(0x0D, ClientCap) & ~(2 << 30)  # DRM_IOW: write only
GETPLANERESOURCES, GETPLANE, GETFB = iowr(0xB5, PlaneRes), iowr(0xB6, Plane), iowr(0xAD, FbCmd)


def shown_framebuffers(fd: int) -> list[FbCmd]:
    fcntl.ioctl(fd, SET_CLIENT_CAP, ClientCap(UNIVERSAL_PLANES, 1))
    res = PlaneRes()
    fcntl.ioctl(fd, GETPLANERESOURCES, res)  # the count first
    ids = (ctypes.c_uint32 * res.count_planes)()
    fcntl.ioctl(fd, GETPLANERESOURCES, PlaneRes(ctypes.addressof(ids), len(ids)))
    shown = []
    for plane_id in ids:
        plane = Plane(plane_id=plane_id)
        fcntl.ioctl(fd, GETPLANE, plane)
        if plane.fb_id:
            fb = FbCmd(fb_id=plane.fb_id)
            fcntl.ioctl(fd, GETFB, fb)
            shown.append(fb)
    return shown


def scanout(fd: int) -> np.ndarray:
    shown = shown_framebuffers(fd)
    if not shown:
        raise SystemExit("no framebuffer on any plane")
    fb = max(shown, key=lambda f: f.width * f.height)
    if fb.bpp != 32:
        raise SystemExit(f"framebuffer of {fb.bpp} bits per pixel; only 32 is read")
    dumb = MapDumb(handle=fb.handle)
    fcntl.ioctl(fd, MAP_DUMB, dumb)
    with mmap.mmap(fd, fb.pitch * fb.height, mmap.MAP_SHARED, mmap.PROT_READ, offset=dumb.offset) as m:
        rows = np.frombuffer(m[:], np.uint8).reshape(fb.height, fb.pitch)  # a copy: m closes
        xrgb = rows[:, : fb.width * 4].reshape(fb.height, fb.width, 4)
    return xrgb[:, :, 2::-1]  # XRGB8888 little-endian is B, G, R, X in memory


def drawn(rgb: np.ndarray) -> float:
    """The share of pixels not of the most common colour."""
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    counts = np.unique(packed, return_counts=True)[1]
    return 1.0 - float(counts.max() / counts.sum())


def tallest(rgb: np.ndarray, colour: tuple[int, int, int]) -> float:
    """The height of the rows holding ``colour``, first to last, as a share of the screen's height."""
    rows = np.flatnonzero((rgb == colour).all(axis=2).any(axis=1))
    return float(rows[-1] - rows[0] + 1) / rgb.shape[0] if rows.size else 0.0


def main() -> int:
    fd = os.open(CARD, os.O_RDWR)
    try:
        rgb = scanout(fd)
    finally:
        os.close(fd)
    pygame.image.save(pygame.surfarray.make_surface(rgb.swapaxes(0, 1)), sys.argv[1])
    share = drawn(rgb)
    print(f"{rgb.shape[1]}x{rgb.shape[0]}, {100 * share:.1f} % of pixels drawn over the background", end="")
    if "--large-yellow" not in sys.argv:
        print()
        return 0 if share >= MIN_DRAWN else 2
    tall = tallest(rgb, YELLOW)
    print(f", yellow type {100 * tall:.1f} % of the screen's height")
    return 0 if share >= MIN_DRAWN and tall >= LARGE else 2


if __name__ == "__main__":
    sys.exit(main())
