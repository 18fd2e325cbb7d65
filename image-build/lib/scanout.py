"""Saves what the screen's controller scans out, read inside the VM: the CRTC's framebuffer.

    python3 scanout.py OUT.png      (as root, in the booted image; numpy and pygame from its venv)

QEMU's screendump of a virtio-gpu without virgl shows black for buffers that Mesa's software
renderer drew (fbcon's text shows), so the boot test reads the framebuffer on the guest's side:
DRM's GETCRTC gives the framebuffer on the screen, GETFB a handle to it (root only), MAP_DUMB an
offset to mmap it by. Prints its size, how much of it is lit and how many colours it has.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import sys

import numpy as np
import pygame

CARD = "/dev/dri/card0"


def iowr(nr: int, struct: type[ctypes.Structure]) -> int:
    return (3 << 30) | (ctypes.sizeof(struct) << 16) | (ord("d") << 8) | nr


class CardRes(ctypes.Structure):
    _fields_ = [
        *((n, ctypes.c_uint64) for n in ("fb_id_ptr", "crtc_id_ptr", "connector_id_ptr", "encoder_id_ptr")),
        *((n, ctypes.c_uint32) for n in ("count_fbs", "count_crtcs", "count_connectors", "count_encoders")),
        *((n, ctypes.c_uint32) for n in ("min_width", "max_width", "min_height", "max_height")),
    ]


class Crtc(ctypes.Structure):
    _fields_ = [
        ("set_connectors_ptr", ctypes.c_uint64),
        *((n, ctypes.c_uint32) for n in ("count_connectors", "crtc_id", "fb_id", "x", "y", "gamma_size")),
        ("mode_valid", ctypes.c_uint32),
        ("mode", ctypes.c_uint8 * 68),
    ]


class FbCmd(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("fb_id", "width", "height", "pitch", "bpp", "depth", "handle")]


class MapDumb(ctypes.Structure):
    _fields_ = [("handle", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("offset", ctypes.c_uint64)]


def scanout(fd: int) -> np.ndarray:
    res = CardRes()
    fcntl.ioctl(fd, iowr(0xA0, CardRes), res)  # counts first
    crtcs = (ctypes.c_uint32 * res.count_crtcs)()
    res = CardRes(crtc_id_ptr=ctypes.addressof(crtcs), count_crtcs=len(crtcs))
    fcntl.ioctl(fd, iowr(0xA0, CardRes), res)
    for crtc_id in crtcs:
        crtc = Crtc(crtc_id=crtc_id)
        fcntl.ioctl(fd, iowr(0xA1, Crtc), crtc)
        if crtc.fb_id:
            break
    else:
        raise SystemExit("no framebuffer on any CRTC")
    fb = FbCmd(fb_id=crtc.fb_id)
    fcntl.ioctl(fd, iowr(0xAD, FbCmd), fb)
    if fb.bpp != 32:
        raise SystemExit(f"framebuffer of {fb.bpp} bits per pixel; only 32 is read")
    dumb = MapDumb(handle=fb.handle)
    fcntl.ioctl(fd, iowr(0xB3, MapDumb), dumb)
    with mmap.mmap(fd, fb.pitch * fb.height, mmap.MAP_SHARED, mmap.PROT_READ, offset=dumb.offset) as m:
        rows = np.frombuffer(m[:], np.uint8).reshape(fb.height, fb.pitch)  # a copy: m closes
        xrgb = rows[:, : fb.width * 4].reshape(fb.height, fb.width, 4)
    return xrgb[:, :, 2::-1]  # XRGB8888 little-endian is B, G, R, X in memory


def main() -> int:
    fd = os.open(CARD, os.O_RDWR)
    try:
        rgb = scanout(fd)
    finally:
        os.close(fd)
    pygame.image.save(pygame.surfarray.make_surface(rgb.swapaxes(0, 1)), sys.argv[1])
    lit = float((rgb.max(axis=2) > 32).mean())
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    print(f"{rgb.shape[1]}x{rgb.shape[0]}, {100 * lit:.1f} % of pixels lit, {colours} colours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
