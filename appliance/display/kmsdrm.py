"""The Pi: full screen through the kernel's mode setting (KMS/DRM) with a dumb buffer, no GL, no desktop.

pygame draws each picture in memory; it is blitted into one buffer that the display controller
scans out, and DIRTYFB tells the drivers that send the screen on demand (virtio-gpu, USB displays) that it
changed. This is how Plymouth and the kernel's console draw: every KMS driver has it (vc4 on a Pi),
it opens in milliseconds and holds no GPU context. SDL's kmsdrm driver went through EGL and GLES:
its context was tied to one thread, it took from 3 s to over 30 s to open in the image's emulated
VM, and there Mesa's software GL put no drawn pixel on the screen, so nothing proved the picture.

The ioctls and structures are those of the kernel's ``include/uapi/drm/drm.h`` and ``drm_mode.h``;
Debian has no Python binding for them (Raspberry Pi OS's ``python3-kms++`` is not in Debian).
Checked in the image's VM (``image-build/boot-test.sh``); this machine has no DRM device.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pygame

from appliance.display import DisplayError

log = logging.getLogger(__name__)

DRI = Path("/dev/dri")
CONNECTED = 1  # drm_mode_get_connector.connection
PREFERRED = 1 << 3  # DRM_MODE_TYPE_PREFERRED
BPP, DEPTH = 32, 24  # XRGB8888: B, G, R, X bytes in memory on a little-endian CPU


def _u32(*names: str) -> list[tuple[str, type]]:
    return [(n, ctypes.c_uint32) for n in names]


def _u64(*names: str) -> list[tuple[str, type]]:
    return [(n, ctypes.c_uint64) for n in names]


class CardRes(ctypes.Structure):
    _fields_ = _u64("fb_id_ptr", "crtc_id_ptr", "connector_id_ptr", "encoder_id_ptr") + _u32(
        "count_fbs", "count_crtcs", "count_connectors", "count_encoders", "min_w", "max_w", "min_h", "max_h"
    )


class ModeInfo(ctypes.Structure):
    _fields_ = [
        ("clock", ctypes.c_uint32),
        *((n, ctypes.c_uint16) for n in ("hdisplay", "hsync_start", "hsync_end", "htotal", "hskew")),
        *((n, ctypes.c_uint16) for n in ("vdisplay", "vsync_start", "vsync_end", "vtotal", "vscan")),
        *_u32("vrefresh", "flags", "type"),
        ("name", ctypes.c_char * 32),
    ]


class Connector(ctypes.Structure):
    _fields_ = _u64("encoders_ptr", "modes_ptr", "props_ptr", "prop_values_ptr") + _u32(
        "count_modes",
        "count_props",
        "count_encoders",
        "encoder_id",
        "connector_id",
        "connector_type",
        "connector_type_id",
        "connection",
        "mm_width",
        "mm_height",
        "subpixel",
        "pad",
    )


class Encoder(ctypes.Structure):
    _fields_ = _u32("encoder_id", "encoder_type", "crtc_id", "possible_crtcs", "possible_clones")


class Crtc(ctypes.Structure):
    _fields_ = [
        *_u64("set_connectors_ptr"),
        *_u32("count_connectors", "crtc_id", "fb_id", "x", "y", "gamma_size", "mode_valid"),
        ("mode", ModeInfo),
    ]


class CreateDumb(ctypes.Structure):
    _fields_ = _u32("height", "width", "bpp", "flags", "handle", "pitch") + _u64("size")


class MapDumb(ctypes.Structure):
    _fields_ = _u32("handle", "pad") + _u64("offset")


class FbCmd(ctypes.Structure):
    _fields_ = _u32("fb_id", "width", "height", "pitch", "bpp", "depth", "handle")


class FbDirty(ctypes.Structure):
    _fields_ = _u32("fb_id", "flags", "color", "num_clips") + _u64("clips_ptr")


def iowr(nr: int, struct: type[ctypes.Structure]) -> int:
    return (3 << 30) | (ctypes.sizeof(struct) << 16) | (ord("d") << 8) | nr


GETRESOURCES, SETCRTC = iowr(0xA0, CardRes), iowr(0xA2, Crtc)
GETENCODER, GETCONNECTOR = iowr(0xA6, Encoder), iowr(0xA7, Connector)
ADDFB, DIRTYFB = iowr(0xAE, FbCmd), iowr(0xB1, FbDirty)
CREATE_DUMB, MAP_DUMB = iowr(0xB2, CreateDumb), iowr(0xB3, MapDumb)


def _ids(count: int) -> ctypes.Array[ctypes.c_uint32]:
    return (ctypes.c_uint32 * max(count, 1))()


@dataclass(frozen=True)
class Output:
    """Where the picture goes: a connected connector, its mode and a CRTC that can drive it."""

    connector: int
    crtc: int
    mode: ModeInfo

    @property
    def size(self) -> tuple[int, int]:
        return self.mode.hdisplay, self.mode.vdisplay


def find_output(fd: int) -> Output | None:
    """The first connected connector with a mode, its preferred mode, and the CRTC to drive it."""
    res = CardRes()
    fcntl.ioctl(fd, GETRESOURCES, res)  # the counts first, then the lists
    crtcs, connectors = _ids(res.count_crtcs), _ids(res.count_connectors)
    res = CardRes(
        crtc_id_ptr=ctypes.addressof(crtcs),
        connector_id_ptr=ctypes.addressof(connectors),
        count_crtcs=res.count_crtcs,
        count_connectors=res.count_connectors,
    )
    fcntl.ioctl(fd, GETRESOURCES, res)
    for connector_id in connectors[: res.count_connectors]:
        conn = Connector(connector_id=connector_id)
        fcntl.ioctl(fd, GETCONNECTOR, conn)  # probes the screen; counts only
        if conn.connection != CONNECTED or conn.count_modes == 0:
            continue
        modes, encoders = (ModeInfo * conn.count_modes)(), _ids(conn.count_encoders)
        conn = Connector(
            connector_id=connector_id,
            modes_ptr=ctypes.addressof(modes),
            count_modes=conn.count_modes,
            encoders_ptr=ctypes.addressof(encoders),
            count_encoders=conn.count_encoders,
        )
        fcntl.ioctl(fd, GETCONNECTOR, conn)
        mode = next((m for m in modes if m.type & PREFERRED), modes[0])
        crtc = _crtc_for(fd, conn, list(encoders[: conn.count_encoders]), list(crtcs[: res.count_crtcs]))
        if crtc:
            return Output(connector_id, crtc, mode)
    return None


def _crtc_for(fd: int, conn: Connector, encoders: list[int], crtcs: list[int]) -> int:
    """The CRTC the connector's encoder drives now (the console's), else the first it could drive."""
    for encoder_id in [conn.encoder_id, *encoders]:
        if not encoder_id:
            continue
        enc = Encoder(encoder_id=encoder_id)
        fcntl.ioctl(fd, GETENCODER, enc)
        if enc.crtc_id:
            return int(enc.crtc_id)
        for i, crtc in enumerate(crtcs):
            if enc.possible_crtcs & (1 << i):
                return crtc
    return 0


def buffer_surface(buffer: mmap.mmap | bytearray, size: tuple[int, int], pitch: int) -> pygame.Surface:
    """A surface drawn straight into an XRGB8888 buffer whose rows are ``pitch`` bytes apart. Some
    drivers (virtio-gpu, USB displays) round the buffer up to whole pages, and pygame takes a
    buffer only of exactly its rows: the rest is left out (the view goes with the surface)."""
    return pygame.image.frombuffer(memoryview(buffer)[: pitch * size[1]], size, "BGRA", pitch)


class KmsdrmScreen:
    name = "kmsdrm"

    def __init__(self, cards: list[Path] | None = None) -> None:
        self._lock = threading.Lock()
        self.shown = 0  # pictures put on the screen so far
        tried = []
        for card in cards if cards is not None else sorted(DRI.glob("card*")):
            try:
                self._open(card)
            except (OSError, DisplayError) as e:
                tried.append(f"{card}: {e}")
                continue
            log.info("screen on %s, mode %s", card, self._output.mode.name.decode())
            return
        raise DisplayError(
            "no screen: "
            + ("; ".join(tried) or f"no DRM device in {DRI}")
            + " (is a screen plugged in? is the user in the video group?)"
        )

    def _open(self, card: Path) -> None:
        """The screen on ``card``; on any error the device is closed, which frees what was made."""
        self._fd = os.open(card, os.O_RDWR | os.O_CLOEXEC)
        self._map: mmap.mmap | None = None
        try:
            output = find_output(self._fd)
            if output is None:
                raise DisplayError("no connected screen")
            self._output, self.size = output, output.size
            self._framebuffer(*output.size)
            self._set_crtc()
        except BaseException:
            self._close()
            raise

    def _framebuffer(self, width: int, height: int) -> None:
        dumb = CreateDumb(height=height, width=width, bpp=BPP)
        fcntl.ioctl(self._fd, CREATE_DUMB, dumb)
        fb = FbCmd(width=width, height=height, pitch=dumb.pitch, bpp=BPP, depth=DEPTH, handle=dumb.handle)
        fcntl.ioctl(self._fd, ADDFB, fb)
        self._fb = fb.fb_id
        mapped = MapDumb(handle=dumb.handle)
        fcntl.ioctl(self._fd, MAP_DUMB, mapped)
        self._map = mmap.mmap(self._fd, dumb.size, mmap.MAP_SHARED, offset=mapped.offset)
        try:
            self._target = buffer_surface(self._map, (width, height), dumb.pitch)
        except (ValueError, pygame.error) as e:  # a buffer smaller than its rows: no surface holds it
            self._map.close()
            self._map = None
            raise DisplayError(f"the screen's buffer cannot be drawn on: {e}") from e

    def _set_crtc(self) -> None:
        """Puts the buffer on the screen; EACCES when another program (a desktop) holds the screen."""
        connectors = (ctypes.c_uint32 * 1)(self._output.connector)
        crtc = Crtc(
            set_connectors_ptr=ctypes.addressof(connectors),
            count_connectors=1,
            crtc_id=self._output.crtc,
            fb_id=self._fb,
            mode_valid=1,
            mode=self._output.mode,
        )
        try:
            fcntl.ioctl(self._fd, SETCRTC, crtc)
        except OSError as e:
            why = "another program holds the screen" if e.errno == errno.EACCES else "the mode was refused"
            raise DisplayError(f"cannot show a picture: {why} ({e})") from e

    def show(self, picture: pygame.Surface, text: str) -> None:  # the text is for off-screen readers
        with self._lock:
            if self._map is None:
                return  # closed
            self._target.blit(picture, (0, 0))  # the view draws at self.size: no scaling
            try:
                fcntl.ioctl(self._fd, DIRTYFB, FbDirty(fb_id=self._fb))  # no clips: all of it
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EINVAL):  # drivers that scan memory directly
                    raise DisplayError(f"the screen refused the picture: {e}") from e
            self.shown += 1

    def _close(self) -> None:
        # Closing the device frees its framebuffer and buffer; the mapping holds the buffer until unmapped.
        if self._map is not None:
            del self._target  # it shares the mapping, which cannot close while shared
            self._map.close()
            self._map = None
        os.close(self._fd)

    def close(self) -> None:
        """Gives the screen back: the kernel puts its console on it again when the device is closed."""
        with self._lock:
            if self._map is not None:
                self._close()
