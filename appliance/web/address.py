"""This unit's address, as the owner of another unit types it on its pairing page.

Shown on the display and the status page and said on request (the button, the status page), so
pairing by address needs no sighted helper and no router's list of devices.
"""

from __future__ import annotations

import ipaddress

import ifaddr

ANY = ("", "0.0.0.0", "::")  # noqa: S104


def unit_address(host: str, port: int) -> str:
    """``host:port`` another unit can reach: the listening address, or this machine's LAN address."""
    if host not in ANY:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{_lan_ipv4()}:{port}"


def _lan_ipv4() -> str:
    """The first IPv4 address that is not loopback or link-local; loopback when nothing else is up."""
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                address = ipaddress.IPv4Address(ip.ip)
                if not (address.is_loopback or address.is_link_local):
                    return str(address)
    return "127.0.0.1"
