"""This unit's address, as the owner of another unit types it on its pairing page.

Shown on the display and the status page and said on request (the button, the status page), so
pairing by address needs no sighted helper and no router's list of devices.
"""

from __future__ import annotations

import ipaddress
import socket

import ifaddr

ANY = ("", "0.0.0.0")  # noqa: S104  ([web] host is IPv4 or a name: appliance/config.py)
ROUTE_PROBE = ("192.0.2.1", 9)  # TEST-NET-1 (RFC 5737): routed like any outside address; nothing is sent


def unit_address(host: str, port: int) -> str:
    """``host:port`` another unit can reach: the listening address, or this machine's LAN address."""
    if host not in ANY:
        return f"{host}:{port}"
    return f"{_lan_ipv4()}:{port}"


def _lan_ipv4() -> str:
    """The address this machine sends from on its default route (the LAN's, not a VPN's or a
    container bridge's); without a route the first IPv4 address that is not loopback or link-local;
    loopback when nothing else is up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(ROUTE_PROBE)  # UDP: chooses the source address, sends nothing
            return str(probe.getsockname()[0])
        except OSError:
            pass  # no default route: look at the interfaces
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                address = ipaddress.IPv4Address(ip.ip)
                if not (address.is_loopback or address.is_link_local):
                    return str(address)
    return "127.0.0.1"
