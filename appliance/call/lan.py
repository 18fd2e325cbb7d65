"""This machine on the home network: the address calls use, and a free port."""

from __future__ import annotations

import socket
import threading


class LanError(Exception):
    """No network interface besides loopback; calls need the home network."""


def host_address() -> str:
    """The IPv4 address of the default route's interface (aiortc never offers 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # sends nothing: a UDP connect only picks the interface
            address = str(s.getsockname()[0])
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        raise LanError("no network interface besides loopback: connect the unit to the home network")
    return address


_GIVEN: set[int] = set()  # the ports free_port() handed out in this process
_GIVING = threading.Lock()


def free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may give a port just
    closed again, and two units started together (the demo's) then got the same one."""
    with _GIVING:
        while True:
            with socket.socket() as s:
                s.bind(("", 0))
                port = int(s.getsockname()[1])
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port
