"""The unit as a systemd service: readiness, the watchdog, and why the last run ended.

systemd's notify protocol is one datagram per message to the socket named by ``$NOTIFY_SOCKET``
(``READY=1``, ``WATCHDOG=1``, ``STATUS=...``), so no library is needed. Outside systemd (tests, a
developer's ``emocall run``) there is no socket and every call does nothing.

The unit (image-build/files/systemd/emocall.service) has ``Type=notify`` and ``WatchdogSec``: it
counts as started only once :meth:`ServiceManager.ready` is sent, and it is killed and restarted
when :meth:`ServiceManager.watchdog` stops pinging, which happens when the health check given to it
(the call engine's event loop answering) fails. Its ``ExecStopPost`` writes ``$SERVICE_RESULT`` to
``$RUNTIME_DIRECTORY/last-stop``; :func:`restarted_after_fault` reads it at the next start so the
unit can say that it was restarted. In RAM, not on the card: a card that turned read-only cannot
take it (every restart would go unsaid) and would keep the last one written for ever (said at every
boot); and a restart is systemd's within one boot, which RAM keeps (``RuntimeDirectoryPreserve``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

LAST_STOP = "last-stop"
# $SERVICE_RESULT values of a clean stop; anything else (watchdog, signal, core-dump, exit-code,
# timeout) is a fault the owner hears about.
CLEAN_RESULTS = ("success", "")


class ServiceManager:
    def __init__(self, socket_path: str | None, watchdog_seconds: float | None) -> None:
        self._path = socket_path
        self.watchdog_seconds = watchdog_seconds
        self._last_ping = 0.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> ServiceManager:
        """What systemd passed to this process (nothing when not run by systemd)."""
        path = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        seconds = int(usec) / 1e6 if usec.isdigit() and ours else None
        return cls(path, seconds)

    def notify(self, message: str) -> bool:
        """Send one notify message; False when there is no service manager or it is unreachable."""
        if not self._path:
            return False
        address = "\0" + self._path[1:] if self._path.startswith("@") else self._path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), address)
        except OSError as e:
            log.warning("cannot tell systemd %r: %s", message.split("=", maxsplit=1)[0], e)
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")
        self._last_ping = time.monotonic()

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping the watchdog at half its interval, but only while ``healthy()`` says the unit works."""
        if self.watchdog_seconds is None:
            return
        now = time.monotonic()
        if now - self._last_ping < self.watchdog_seconds / 2:
            return
        if healthy():
            self.notify("WATCHDOG=1")
            self._last_ping = now
        else:
            log.error("the unit does not respond: no watchdog ping, systemd restarts it")


def runtime_directory() -> Path | None:
    """The service's ``RuntimeDirectory`` (in RAM, kept across its restarts until the next boot);
    None outside systemd."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    return Path(runtime) if runtime else None


def restarted_after_fault(runtime: Path | None) -> str | None:
    """The fault that ended the last run (systemd's $SERVICE_RESULT), once; None after a clean stop,
    and outside systemd (no ``runtime`` directory)."""
    if runtime is None:
        return None
    path = runtime / LAST_STOP
    try:
        result = path.read_text().strip()
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read %s: %s", path, e)
        return None
    return None if result in CLEAN_RESULTS else result
