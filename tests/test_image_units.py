"""The image's systemd units as systemd reads them, on this machine without booting anything.

`systemd-analyze verify` at debug level prints the unit it loaded, dependencies included (with the
mount units systemd-fstab-generator makes from the image's fstab); `systemd-analyze security
--offline` says which sandboxing settings apply. The image's own root is checked by
tests/test_image_install.py (verify inside it) and the units run by boot-test.sh.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.service import restarted_after_fault

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "image-build/files"
GENERATORS = [Path("/usr/lib/systemd/system-generators"), Path("/lib/systemd/system-generators")]


def need_systemd() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing (the systemd package)")


def loaded(unit: str, tmp_path: Path) -> str:
    """systemd's dump of ``unit`` from image-build/files/systemd, loaded beside the image's mounts."""
    need_systemd()
    units, mounts = tmp_path / "units", tmp_path / "mounts"
    shutil.copytree(FILES / "systemd", units)
    mounts.mkdir()
    generator = next(
        (d / "systemd-fstab-generator" for d in GENERATORS if (d / "systemd-fstab-generator").exists()), None
    )
    if generator is None:
        pytest.fail("systemd-fstab-generator missing (the systemd package)")
    env = {**os.environ, "SYSTEMD_FSTAB": str(FILES / "fstab"), "SYSTEMD_PROC_CMDLINE": ""}
    made = subprocess.run([str(generator), *[str(mounts)] * 3], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_UNIT_PATH": f"{units}:{mounts}:"}
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(units / unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"-> Unit {unit}:" in result.stdout, result.stderr[-2000:]
    return result.stdout


def settings(dump: str, name: str) -> list[str]:
    return re.findall(rf"^\t\t{name}: (.*)$", dump, re.MULTILINE)


def commands(dump: str, kind: str) -> list[str]:
    """The command lines of one Exec kind (ExecStart, ExecStartPost, ...), in order."""
    block = dump.split(f"\t\t-> {kind}:\n", 1)[1]
    return re.findall(r"^\t\t\tCommand Line: (.*)$", block.split("\t\t-> ", 1)[0], re.MULTILINE)


def test_first_boot_waits_for_the_boot_and_state_partitions_and_syncs_before_its_marker(
    tmp_path: Path,
) -> None:
    """Both partitions are nofail mounts, which local-fs.target does not wait for: first boot needs
    them mounted (Imager's files on the one, the identity key on the other). Everything it wrote is
    synced to the card before the marker that keeps it from running again."""
    fstab = (FILES / "fstab").read_text()
    assert re.search(r"/boot/firmware .*nofail", fstab) and re.search(r"/var/lib/emocall .*nofail", fstab)
    dump = loaded("emocall-firstboot.service", tmp_path)
    for mount in ("boot-firmware.mount", "var-lib-emocall.mount"):
        assert any(r.startswith(f"{mount} ") for r in settings(dump, "Requires")), mount
        assert any(r.startswith(f"{mount} ") for r in settings(dump, "After")), mount
    post = commands(dump, "ExecStartPost")
    marker = post.index("/usr/bin/touch /var/lib/emocall-firstboot.done")
    assert any(c.endswith("/sync") for c in post[:marker]), post


def test_the_service_restarts_unhurried_and_keeps_why_it_stopped_in_memory(tmp_path: Path) -> None:
    """A unit failing at every start waits 10 s or more between tries. Why a run ended is written to
    the runtime directory (RAM, kept until the next boot), never the card: on a card that turned
    read-only every restart went unsaid, and the last one written there was said at every boot."""
    dump = loaded("emocall.service", tmp_path)
    (delay,) = settings(dump, "RestartSec")
    assert re.fullmatch(r"\d+s", delay) and int(delay[:-1]) >= 10, delay
    assert settings(dump, "RuntimeDirectoryPreserve") == ["yes"]
    (stop,) = commands(dump, "ExecStopPost")
    shell, flag, script = shlex.split(stop)  # quoted as for a shell, "$" as \$
    assert (shell, flag) == ("/bin/sh", "-c")
    script = script.replace("\\$", "$")
    assert "/var/lib" not in script, script
    runtime = tmp_path / "run"
    runtime.mkdir()
    for result in ("watchdog", "success"):
        env = {"SERVICE_RESULT": result, "RUNTIME_DIRECTORY": str(runtime)}
        done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert restarted_after_fault(runtime) == (None if result == "success" else result)


def exposure(unit: str) -> dict[str, bool]:
    """systemd-analyze security --offline: each setting's name and whether it is applied (✓)."""
    need_systemd()
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(FILES / "systemd" / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    marks = re.findall(r"^([✓✗]) (\S+)", result.stdout, re.MULTILINE)
    assert marks, result.stdout + result.stderr
    return {name: mark == "✓" for mark, name in marks}


def test_the_appliance_service_is_sandboxed_and_keeps_its_devices() -> None:
    """emocall.service runs as its own user with no capability; the kernel's modules, logs and
    tunables, namespaces and other ABIs are out of its reach. Not PrivateDevices= or ProtectClock=:
    they would take the cameras, the screen, the GPIO chips and the Coral away."""
    got = exposure("emocall.service")
    applied = [
        "ProtectKernelModules=",
        "ProtectKernelLogs=",
        "ProtectKernelTunables=",
        "LockPersonality=",
        "SystemCallArchitectures=",
        "RestrictNamespaces=~user",
        "RestrictNamespaces=~net",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "CapabilityBoundingSet=~CAP_NET_ADMIN",
        "CapabilityBoundingSet=~CAP_SYS_MODULE",
        "NoNewPrivileges=",
        "PrivateTmp=",
    ]
    assert [s for s in applied if not got[s]] == []
    assert not got["PrivateDevices="] and not got["ProtectClock="]


def test_the_hotspot_runs_as_root_in_a_read_only_system() -> None:
    """emocall-hotspot.service needs root (NetworkManager, runuser for the voice) but writes only its
    password and the Wi-Fi request: the rest of the system is read-only to it, and the kernel's
    modules, logs and tunables are out of its reach."""
    got = exposure("emocall-hotspot.service")
    applied = [
        "ProtectSystem=",
        "PrivateTmp=",
        "ProtectKernelModules=",
        "ProtectKernelLogs=",
        "ProtectKernelTunables=",
        "ProtectControlGroups=",
        "LockPersonality=",
        "RestrictRealtime=",
        "SystemCallArchitectures=",
    ]
    assert [s for s in applied if not got[s]] == []
    unit = (FILES / "systemd/emocall-hotspot.service").read_text()
    # What the script writes (image-build/files/network/emocall-hotspot) stays writable.
    assert re.search(r"^ReadWritePaths=.*/etc/emocall\b", unit, re.MULTILINE)
    assert re.search(r"^ReadWritePaths=.*/var/lib/emocall\b", unit, re.MULTILINE)
    assert "ProtectHome=read-only" in unit  # true would hide /run/user, where the voice finds PipeWire
