"""Homes and a relay in network namespaces, for the relay tests and benchmark (root only).

An "internet" namespace runs the real relay, Prosody and coturn, configured by ``relay/setup
--render`` with a throwaway CA's certificate; two homes each sit behind a router namespace that
does what a home router does: masquerade (NAT) and drop unsolicited inbound traffic. Home 2's
router can be symmetric (``masquerade random,fully-random``: a new outside port per destination),
so only TURN can join it. Everything is deleted on the way out, whatever happened.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "relay.test"
SERVER_IP = "198.51.100.1"  # TEST-NET-2: public-looking, so coturn's denied private ranges do not apply
ROUTER_WAN = ("198.51.100.11", "198.51.100.12")
HOME_NET = ("10.71.1", "10.71.2")
TURN_PORT = 3478
TURNS_PORT = 5349  # relay/setup's: TURN over TLS
HTTPS_PORT = 5281  # relay/setup's: Prosody's HTTPS (the guests' page and XMPP over WebSocket)
XMPP_PORT = 5222


class TopologyUnavailable(Exception):
    """Namespaces, nftables, Prosody or coturn cannot be used here (the message says why)."""


def unavailable(e: TopologyUnavailable) -> NoReturn:
    """Skip where namespaces cannot be built (not root); as root (CI) a missing server, or a relay
    that does not answer, is a failure, not a skip."""
    if os.geteuid() != 0:
        pytest.skip(str(e))
    pytest.fail(str(e))


def run(*args: str, ns: str | None = None, timeout: float = 20, stdin: str | None = None) -> str:
    command = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise TopologyUnavailable(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def veth(name: str, ns: str, peer: str, peer_ns: str) -> None:
    """A veth pair: ``name`` in namespace ``ns``, its other end ``peer`` in ``peer_ns``."""
    run("ip", "link", "add", name, "netns", ns, "type", "veth", "peer", "name", peer, "netns", peer_ns)


def masquerade(symmetric: bool) -> str:
    # Symmetric: a new outside port for every destination, so a hole punched towards the relay is
    # no use to the other unit.
    return f'oifname "wan" masquerade{" random,fully-random" if symmetric else ""}'


def router_rules(symmetric: bool) -> str:
    # A home router: NAT out of the WAN port, nothing new accepted from outside. Without the input
    # drop, conntrack keeps the peer's first early packet and masquerade then picks another port.
    return f"""table inet rly_router {{
  chain post {{ type nat hook postrouting priority srcnat; policy accept; {masquerade(symmetric)}; }}
  chain input {{ type filter hook input priority filter; policy accept; iifname "wan" ct state new drop; }}
  chain forward {{
    type filter hook forward priority filter; policy accept; iifname "wan" ct state new drop;
  }}
}}
"""


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and the relay's certificate for DOMAIN: (ca.pem, relay.crt, relay.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emocall test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / f"{DOMAIN}.crt", folder / f"{DOMAIN}.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


PROSODY_MAIN = """-- What Debian's /etc/prosody/prosody.cfg.lua gives a relay, for one in a namespace.
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
admin_socket = "{dir}/prosody.sock"
interfaces = {{ "{ip}" }}
c2s_ports = {{ {port} }}
https_ports = {{ {https_port} }}
https_interfaces = {{ "{ip}" }}
http_ports = {{ }}
https_ssl = {{ certificate = "{cert}"; key = "{key}"; }}
modules_enabled = {{ "disco"; "roster"; "saslauth"; "tls"; "ping"; "admin_shell"; "limits"; }}
limits = {{ c2s = {{ rate = "10kb/s"; }}; s2sin = {{ rate = "30kb/s"; }}; }}  -- Debian's default
authentication = "internal_hashed"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}
VirtualHost "localhost"  -- as Debian's main file and its conf.d/localhost.cfg.lua declare it
Include "{dir}/{domain}.cfg.lua"
"""


@dataclass
class Relay:
    """Prosody and coturn in the internet namespace, configured by ``relay/setup --render``."""

    ns: str
    dir: Path
    ca: Path
    prosody: subprocess.Popen[bytes] | None = None
    coturn: subprocess.Popen[bytes] | None = None
    secret: str = ""

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    def render(self, guest_ttl: int | None = None, guest_credentials: str | None = None) -> None:
        """``guest_ttl``: how long guests' TURN credentials last, in seconds, if not setup's hour;
        ``guest_credentials``: how many one address gets, as relay/guests.pfw's %RATE, if not its own."""
        ca, cert, key = make_certificates(self.dir / "certs")
        self.ca = ca
        run(
            "bash", str(ROOT / "relay" / "setup"), DOMAIN, "--render", str(self.dir),
            "--cert", str(cert), "--key", str(key), "--address", SERVER_IP, "--turn-host", SERVER_IP,
        )  # fmt: skip
        self.secret = (self.dir / "turn-secret").read_text().strip()
        if guest_ttl is not None:
            _change(
                self.dir / f"{DOMAIN}.cfg.lua",
                "external_service_ttl = 3600",
                f"external_service_ttl = {guest_ttl}",
            )
        if guest_credentials is not None:
            rate = "%RATE credentials: 0.004 (burst 1000)"
            _change(self.dir / "guests.pfw", rate, f"%RATE credentials: {guest_credentials}")
        ports = {"port": XMPP_PORT, "https_port": HTTPS_PORT}
        main = PROSODY_MAIN.format(dir=self.dir, ip=SERVER_IP, cert=cert, key=key, domain=DOMAIN, **ports)
        self.config.write_text(main)
        (self.dir / "data").mkdir(exist_ok=True)

    def spki(self) -> str:
        """The relay certificate's key as Chromium's --ignore-certificate-errors-spki-list wants it (the
        base64 SHA-256 of its SubjectPublicKeyInfo): trusted as a real relay's would be, nothing else."""
        cert = x509.load_pem_x509_certificate((self.dir / "certs" / f"{DOMAIN}.crt").read_bytes())
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = cert.public_key().public_bytes(serialization.Encoding.DER, spki)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def start_prosody(self) -> None:
        log = (self.dir / "prosody.out").open("ab")
        self.prosody = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "prosody", "--config", str(self.config), "-F"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.ns, XMPP_PORT, "tcp", self.prosody, self.dir / "prosody.log")

    def stop_prosody(self) -> None:
        stop(self.prosody)
        self.prosody = None

    def start_coturn(self) -> None:
        log = (self.dir / "coturn.out").open("ab")
        self.coturn = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "turnserver", "-c", str(self.dir / "turnserver.conf")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.ns, TURN_PORT, "udp", self.coturn, self.dir / "turnserver.log")

    def unit_command(self, action: str, name: str) -> str:
        """``relay/unit ACTION NAME`` on this relay, as its admin would run it."""
        script = str(ROOT / "relay" / "unit")
        args = ("bash", script, action, name, "--domain", DOMAIN, "--config", str(self.config))
        try:
            return run(*args, ns=self.ns, timeout=60)  # it waits up to 15 s for a just-started Prosody
        except TopologyUnavailable as e:
            log = (self.dir / "prosody.log").read_text(errors="replace")[-2000:]
            raise TopologyUnavailable(f"{e}\nProsody's log ends:\n{log}") from e

    def add_unit(self, name: str) -> tuple[str, str]:
        """Create a unit's account with ``relay/unit add``; returns (jid, password)."""
        out = self.unit_command("add", name)
        fields = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
        password = next(line for line in out.splitlines() if line.startswith("relay password: "))
        return fields["jid"].strip('"'), password.removeprefix("relay password: ")

    def close(self) -> None:
        stop(self.prosody)
        stop(self.coturn)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def wait_port(ns: str, port: int, proto: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    flag = "-ltn" if proto == "tcp" else "-lun"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise TopologyUnavailable(f"{proc.args!r} exited with {proc.returncode}: {text}")
        if f":{port} " in run("ss", flag, ns=ns):
            return
        time.sleep(0.2)
    raise TopologyUnavailable(f"nothing listens on {proto} port {port} in {ns} after 20 s")


@dataclass
class Topology:
    tag: str
    symmetric: bool
    relay: Relay
    namespaces: list[str] = field(default_factory=list)

    @property
    def inet(self) -> str:
        return f"{self.tag}-inet"

    def home(self, i: int) -> str:
        return f"{self.tag}-home{i + 1}"

    def router(self, i: int) -> str:
        return f"{self.tag}-rtr{i + 1}"

    def unit_ip(self, i: int) -> str:
        return f"{HOME_NET[i]}.2"

    def _ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)

    def build(self) -> None:
        inet = self.inet
        self._ns(inet)
        run("ip", "link", "add", "br0", "type", "bridge", ns=inet)
        run("ip", "addr", "add", f"{SERVER_IP}/24", "dev", "br0", ns=inet)
        run("ip", "link", "set", "br0", "up", ns=inet)
        for i in range(2):
            router, home = self.router(i), self.home(i)
            self._ns(router)
            self._ns(home)
            veth("wan", router, f"r{i + 1}", inet)
            run("ip", "link", "set", f"r{i + 1}", "master", "br0", "up", ns=inet)
            veth("lan", router, "eth0", home)
            run("ip", "addr", "add", f"{ROUTER_WAN[i]}/24", "dev", "wan", ns=router)
            run("ip", "addr", "add", f"{HOME_NET[i]}.1/24", "dev", "lan", ns=router)
            run("ip", "addr", "add", f"{self.unit_ip(i)}/24", "dev", "eth0", ns=home)
            for dev in ("wan", "lan"):
                run("ip", "link", "set", dev, "up", ns=router)
            run("ip", "link", "set", "eth0", "up", ns=home)
            run("ip", "route", "add", "default", "via", f"{HOME_NET[i]}.1", ns=home)
            run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
            run("nft", "-f", "-", ns=router, stdin=router_rules(self.symmetric and i == 1))  # fmt: skip

    def set_symmetric(self, symmetric: bool) -> None:
        """Make home 2's router a symmetric NAT (or a cone NAT again), for the calls that follow.

        Only the rule changes: deleting the table would unhook NAT, and the kernel then drops every
        NATed connection, the units' relay connections with them."""
        router = self.router(1)
        rule = masquerade(symmetric)
        run("nft", f"flush chain inet rly_router post; add rule inet rly_router post {rule}", ns=router)
        self.symmetric = symmetric

    def close(self) -> None:
        self.relay.close()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _change(rendered: Path, old: str, new: str) -> None:
    """``old`` in ``rendered`` (once: else the test's change would not be made) becomes ``new``."""
    text = rendered.read_text()
    assert text.count(old) == 1, f"{rendered} has no {old!r} to change"
    rendered.write_text(text.replace(old, new))


@contextmanager
def topology(
    folder: Path,
    symmetric: bool = False,
    area: str = "rly",
    guest_ttl: int | None = None,
    guest_credentials: str | None = None,
) -> Iterator[Topology]:
    """Build the homes and the relay, start Prosody and coturn; everything goes on the way out.

    ``area`` starts the namespaces' names (each test area's own: ``gst`` for the guests' tests);
    ``guest_ttl`` and ``guest_credentials`` as in ``Relay.render``."""
    if os.geteuid() != 0:
        raise TopologyUnavailable("needs root to build network namespaces (CI runs as root)")
    for tool in ("ip", "nft", "prosody", "prosodyctl", "turnserver"):
        if shutil.which(tool) is None:
            raise TopologyUnavailable(f"{tool} is missing: bash .ci/setup --tests installs it")
    tag = f"{area}-{os.getpid() % 100000}{'s' if symmetric else 'c'}"
    topo = Topology(tag, symmetric, Relay(f"{tag}-inet", folder, folder / "certs" / "ca.pem"))
    try:
        topo.build()
        topo.relay.render(guest_ttl, guest_credentials)
        topo.relay.start_coturn()
        topo.relay.start_prosody()
        yield topo
    finally:
        topo.close()
