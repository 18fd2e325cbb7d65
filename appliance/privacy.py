"""Privacy by design: faces are analysed only in a call the owner shares, and everything can be erased.

- :class:`CallGate` keeps the vision worker paused except while a call is connected and the
  owner shares expressions (``share_expressions``), so no face in the room is analysed otherwise;
  and the camera closed (idle, cool) except while a call is being placed, rings or runs.
- :func:`erase` removes what the unit wrote in its data directory ("forget everything"): state
  (pairings, settings, the owner's answer about sharing), identity key, the speaker's recording,
  the display's snapshots and logs. The appliance then starts again as a new unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from appliance.call import IN_PROGRESS
from appliance.events import Event, EventBus

log = logging.getLogger(__name__)

# What the unit (and `emocall demo`) writes in its data directory; nothing else there is touched.
# wifi-request: a Wi-Fi change waiting for the image's helper (web/wifi.py); last-stop: how the
# service last ended, which releases before 2026-12-06 kept on the card (now in RAM: service.py);
# FORGET_PENDING: see erase.
FORGET_PENDING = "forget-pending"
UNIT_FILES = (
    "state.db*",
    "identity.key*",
    "speaker*.wav",
    "display*",
    "*.log",
    "wifi-request*",
    "last-stop",
    FORGET_PENDING,
)


class PrivacyError(Exception):
    """Something the unit wrote could not be erased; the message names it."""


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


class CallGate:
    """Runs the vision worker only while a call is connected and ``sharing()`` is true, and the
    camera (when given) only while there is a call to send it to."""

    def __init__(
        self,
        events: EventBus,
        worker: Pausable,
        sharing: Callable[[], bool],
        camera: Pausable | None = None,
    ) -> None:
        self._worker, self._sharing, self._camera = worker, sharing, camera
        self._state = "idle"
        self._guest = False  # the call in progress is a guest's (from a browser)
        worker.pause()
        if camera is not None:
            camera.pause()
        self._unsubscribe = events.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.topic == "call.state":
            self._state = str(event.data.get("state", ""))
            self._guest = bool(event.data.get("guest"))
            if self._camera is not None:
                # Its video goes out from the offer on: the camera runs while a call is in progress.
                (self._camera.resume if self._state in IN_PROGRESS else self._camera.pause)()
        elif event.topic != "settings.changed":
            return
        # A guest never receives the owner's expressions: no face is analysed for one.
        if self._state == "connected" and not self._guest and self._sharing():
            self._worker.resume()
        else:
            self._worker.pause()

    def close(self) -> None:
        self._unsubscribe()


def unit_files(data_dir: Path, extra: Iterable[Path | None] = ()) -> list[Path]:
    """Every file the unit wrote: :data:`UNIT_FILES` in ``data_dir`` and the configured outputs."""
    found = {p for pattern in UNIT_FILES for p in data_dir.glob(pattern) if p.is_file()}
    found |= {p for p in extra if p is not None and p.is_file()}
    return sorted(found)


def forget_later(data_dir: Path) -> None:
    """Write down that the owner asked to forget everything (:func:`erase` removes it last)."""
    (data_dir / FORGET_PENDING).touch(mode=0o600)


def forget_pending(data_dir: Path) -> bool:
    return (data_dir / FORGET_PENDING).exists()


def erase(data_dir: Path, extra: Iterable[Path | None] = ()) -> list[Path]:
    """Delete every file the unit wrote (see :func:`unit_files`); returns what was deleted.

    The owner's request is written down first (:func:`forget_later`) and deleted last, so an erase
    cut short (power, the watchdog) is finished at the next start (:func:`forget_pending`).
    """
    files = sorted(unit_files(data_dir, extra), key=lambda p: p.name == FORGET_PENDING)
    for path in files:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise PrivacyError(f"cannot erase {path}: {e.strerror} (delete it by hand)") from e
    log.info("erased %d files the unit wrote in %s", len(files), data_dir)
    return files
