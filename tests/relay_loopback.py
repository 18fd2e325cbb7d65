"""A real Prosody on 127.0.0.1, in a temporary folder, for the relay client's tests.

No network namespaces (``relay_net.py`` builds those, root only): Prosody is configured as
``relay/setup --render`` configures a relay (``relay_net.PROSODY_MAIN`` around it) with a throwaway
CA's certificate and listens on a free loopback port; accounts are made with ``relay/unit add``.
Without Prosody the tests are skipped, except as root (CI), where that is a failure.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.call.lan import free_port
from appliance.config import RelayConfig
from tests.relay_net import (
    DOMAIN,
    PROSODY_MAIN,
    ROOT,
    Relay,
    TopologyUnavailable,
    make_certificates,
    run,
    stop,
    unavailable,
)

LOOPBACK = "127.0.0.1"


@dataclass
class Loopback:
    dir: Path
    ca: Path
    port: int
    prosody: subprocess.Popen[bytes]

    def add_unit(self, name: str) -> tuple[str, str]:
        """A unit's account made by ``relay/unit add``: (jid, password)."""
        try:
            return Relay("", self.dir, self.ca).add_unit(name)  # no namespace: "" runs it here
        except TopologyUnavailable as e:
            unavailable(e)

    def settings(self, jid: str, password: str, **more: float) -> tuple[RelayConfig, str, ssl.SSLContext]:
        """A unit's [relay] settings for this relay, its password and the TLS context trusting the CA."""
        password_file = self.dir / f"{jid}.password"
        password_file.write_text(password)
        cfg = RelayConfig(
            jid=jid, password_file=password_file, server=f"{LOOPBACK}:{self.port}", ca_file=self.ca, **more
        )
        return cfg, password, ssl.create_default_context(cafile=str(self.ca))


@contextmanager
def loopback_relay(folder: Path) -> Iterator[Loopback]:
    """Prosody configured by relay/setup, listening on 127.0.0.1 only; stopped on the way out."""
    try:
        prosody, ca, port = _start(folder)
    except TopologyUnavailable as e:
        unavailable(e)
    try:
        yield Loopback(folder, ca, port, prosody)
    finally:
        stop(prosody)


def _start(folder: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    for tool in ("prosody", "prosodyctl"):
        if shutil.which(tool) is None:
            raise TopologyUnavailable(f"{tool} is missing: bash .ci/setup --tests installs it")
    ca, cert, key = make_certificates(folder / "certs")
    run(
        "bash", str(ROOT / "relay" / "setup"), DOMAIN, "--render", str(folder),
        "--cert", str(cert), "--key", str(key), "--address", LOOPBACK, "--turn-host", LOOPBACK,
    )  # fmt: skip
    port = free_port()
    main = PROSODY_MAIN.format(
        dir=folder, ip=LOOPBACK, cert=cert, key=key, domain=DOMAIN, port=port, https_port=free_port()
    )
    (folder / "prosody.cfg.lua").write_text(main)
    (folder / "data").mkdir(exist_ok=True)
    with (folder / "prosody.out").open("ab") as out:
        prosody = subprocess.Popen(
            ["prosody", "--config", str(folder / "prosody.cfg.lua"), "-F"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, prosody, folder / "prosody.log")
    except TopologyUnavailable:
        stop(prosody)
        raise
    return prosody, ca, port


def _wait_listening(port: int, prosody: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if prosody.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise TopologyUnavailable(f"prosody exited with {prosody.returncode}: {text}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TopologyUnavailable(f"Prosody does not listen on {LOOPBACK}:{port} after 20 s")
