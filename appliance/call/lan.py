"""This machine on the home network: the address calls use, and a free port."""

from __future__ import annotations

import socket


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])
