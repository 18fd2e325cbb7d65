"""The image's install script, run into a real root filesystem (image-build/install-test-root.sh).

CI covers: every image script is shellcheck-clean; install.sh turns a Debian bookworm root (this
machine's architecture, built by mmdebstrap) into a unit: the user and its groups, the locked
virtualenv that imports the appliance and its native parts, the units enabled and valid, PipeWire
for the service user, the journal in memory, and nothing unit-specific or secret left in the image;
then `emocall selftest` runs inside that root (camera from a clip, CPU inference, espeak-ng).
Only `sudo bash image-build/build.sh` + `boot-test.sh` make the arm64 image and boot it (README).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from appliance.backup import make_backup
from appliance.config import load

from .conftest import CLIPS, need
from .test_backup import asha_paired_with_bela

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "image-build"
SCRIPTS = [
    *IMAGE.glob("*.sh"),
    *IMAGE.glob("lib/*.sh"),
    IMAGE / "files/firstboot/emocall-firstboot",
    IMAGE / "files/firstboot/emocall-imager-fixup",
    IMAGE / "files/network/emocall-hotspot",
    IMAGE / "files/bin/emocall",
    IMAGE / "pi-gen/stage-emocall/prerun.sh",
    IMAGE / "pi-gen/stage-emocall/00-emocall/00-run.sh",
]
TOOLS = ("shellcheck", "mmdebstrap")
# Building the root and installing into it takes minutes (about 5 on this machine, more in CI's first
# run, which downloads every package).
pytestmark = pytest.mark.timeout(1800)


def need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:  # .ci/setup --tests installs them: in CI a missing tool is a failure, not a skip
        pytest.fail(f"{', '.join(missing)} missing: run bash .ci/setup --tests")
    if os.geteuid() != 0:
        pytest.skip("building a root filesystem needs root (CI runs as root)")


def test_every_image_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: run bash .ci/setup --tests")
    assert all(s.is_file() for s in SCRIPTS)
    result = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=IMAGE, timeout=120
    )
    assert result.returncode == 0, result.stdout


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need_tools()
    where = Path(os.environ.get("EMOCALL_TEST_ROOT", tmp_path_factory.mktemp("image") / "root"))
    result = subprocess.run(
        ["bash", str(IMAGE / "install-test-root.sh"), str(where)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    yield where


def in_root(root: Path, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    argv_ = ["chroot", str(root), *argv]
    return subprocess.run(argv_, capture_output=True, text=True, env=env, timeout=timeout)


def test_the_service_user_has_its_groups_and_a_private_state_dir(root: Path) -> None:
    groups = in_root(root, "id", "-nG", "emocall").stdout.split()
    assert {"emocall", "video", "gpio", "audio", "plugdev", "apex"} <= set(groups)
    state = root / "var/lib/emocall"
    # The service's, with no StateDirectory= to make it so at each start (emocall.service).
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert in_root(root, "stat", "-c", "%U", "/var/lib/emocall").stdout.strip() == "emocall"
    shell = in_root(root, "getent", "passwd", "emocall").stdout.strip().split(":")[-1]
    assert shell == "/usr/sbin/nologin"


def test_the_venv_imports_the_appliance_and_its_native_parts(root: Path) -> None:
    code = (
        # sounddevice loads PortAudio (libportaudio2) at import: without it calls send silence.
        "import numpy, cv2, av, aiortc, pygame, lgpio, gpiozero, ai_edge_litert, sounddevice, appliance.app; "
        "print(numpy.__version__)"
    )
    result = in_root(root, "/opt/emocall/venv/bin/python", "-c", code)
    assert result.returncode == 0, result.stderr
    # numpy 1.x: Raspberry Pi OS's apt simplejpeg/picamera2 (seen through system site packages) need it.
    assert result.stdout.splitlines()[-1].startswith("1."), result.stdout
    cfg = (root / "opt/emocall/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg


def test_the_units_are_installed_enabled_and_valid(root: Path) -> None:
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "emocall.service").is_symlink()
    assert (wants / "emocall-firstboot.service").is_symlink()
    assert (wants / "emocall-hotspot.service").is_symlink()
    assert not (wants / "ssh.service").exists(), "SSH must stay off unless the flasher enables it"
    # No cron on the image: the clock is saved hourly by a timer, for a boot after a power cut.
    assert (root / "etc/systemd/system/timers.target.wants/emocall-clock-save.timer").is_symlink()
    fixup = root / "etc/systemd/system/kernel-command-line.target.wants/emocall-imager-fixup.service"
    assert fixup.is_symlink()
    for command in ("usr/lib/raspberrypi-sys-mods/imager_custom", "usr/lib/userconf-pi/userconf"):
        assert os.readlink(root / command) == "/usr/lib/emocall/imager_custom.py"  # kept current
    unit = (root / "etc/systemd/system/emocall.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "WorkingDirectory=/run/emocall", "UMask=0077"):
        assert line in unit
    # Nothing that requires the state partition's mount (the image VM's `unmounted` check): a
    # partition that did not mount failed the service before it could say so.
    assert "ReadWritePaths=/var/lib/emocall" in unit and "After=" in unit
    assert not re.search(r"^(StateDirectory|RequiresMountsFor|WorkingDirectory=/var)", unit, re.M)
    uid = in_root(root, "id", "-u", "emocall").stdout.strip()
    dropin = (root / "etc/systemd/system/emocall.service.d/10-audio.conf").read_text()
    assert f"XDG_RUNTIME_DIR=/run/user/{uid}" in dropin
    assert (root / "var/lib/systemd/linger/emocall").exists()
    # /tmp in memory, 64 MiB: the tmp.mount enabled in /etc outranks the fstab's line, and its own
    # size is half the RAM.
    assert "size=64M" in (root / "etc/systemd/system/tmp.mount.d/10-emocall-size.conf").read_text()
    result = in_root(
        root,
        "systemd-analyze",
        "verify",
        "--man=no",
        "emocall.service",
        "emocall-firstboot.service",
        "emocall-hotspot.service",
        "emocall-clock-save.timer",
        "emocall-clock-save.service",
        "emocall-imager-fixup.service",
    )
    assert result.returncode == 0, result.stderr


def test_audio_and_journal_configuration(root: Path) -> None:
    echo = (root / "etc/pipewire/pipewire.conf.d/50-emocall-echo-cancel.conf").read_text()
    assert 'node.name = "echo-cancel-source"' in echo and "priority.session = 3000" in echo
    journal = (root / "etc/systemd/journald.conf.d/50-emocall.conf").read_text()
    assert "Storage=volatile" in journal and "MaxRetentionSec=1day" in journal and "MaxFileSec=1h" in journal
    assert (root / "usr/share/emocall/models/edgetpu/emotion_int8.tflite").is_file()


def test_the_journal_keeps_nothing_much_longer_than_its_retention() -> None:
    """journald deletes by age only archived files, and it archived the file being written only
    after a month (MaxFileSec's default) or 2 MiB: a quiet unit kept its log for up to a month."""
    settings = dict(
        line.split("=", 1)
        for line in (IMAGE / "files/journald/emocall.conf").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert "MaxFileSec" in settings, "without it the file being written is archived after a month"
    assert seconds(settings["MaxFileSec"]) <= seconds(settings["MaxRetentionSec"])


# systemd.time(7)'s units up to a week; a number alone is seconds.
SPAN_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600}
SPAN_UNITS |= {"d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}


def seconds(span: str) -> int:
    """A systemd time span ("1day", "1h 30min") in seconds; KeyError for a unit not listed above."""
    return sum(int(n) * SPAN_UNITS[unit] for n, unit in re.findall(r"(\d+)\s*([a-z]*)", span))


def test_nothing_unit_specific_or_secret_is_left(root: Path) -> None:
    assert not list((root / "etc/ssh").glob("ssh_host_*")), "SSH host keys are made at first boot"
    assert (root / "etc/machine-id").read_text() == ""
    assert not list((root / "var/lib/apt/lists").glob("*_Packages*"))
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))
    root_password = in_root(root, "getent", "shadow", "root").stdout.split(":")[1]
    assert root_password.startswith(("!", "*")), "no root password in the image"
    users = [ln.split(":")[0] for ln in (root / "etc/passwd").read_text().splitlines() if ":/bin/bash" in ln]
    assert users in ([], ["root"]), f"login users in the image: {users}"


def test_selftest_runs_inside_the_installed_root(root: Path) -> None:
    """`sudo emocall selftest`, as an owner's helper types it, runs as the service does (its user,
    the name first boot wrote, its configuration); without root it says to use sudo."""
    clip = need(CLIPS / "single_face.mp4")
    shutil.copy(clip, root / "tmp/clip.mp4")
    names = root / "etc/emocall/unit.env"
    names.write_text("EMOCALL_UNIT__NAME=Kitchen unit\n")  # as first boot writes it
    try:
        result = in_root(root, "emocall", "selftest", "--json", "--source", "/tmp/clip.mp4")
        named = in_root(root, "emocall", "config")
    finally:
        names.unlink()
    report = {p["part"]: p for p in json.loads(result.stdout)["parts"]}
    assert report["camera"]["ok"], report["camera"]
    assert report["vision"]["ok"], report["vision"]
    assert report["speech"]["ok"], report["speech"]
    assert json.loads(named.stdout)["unit"]["name"] == "Kitchen unit", named.stderr
    refused = in_root(root, "runuser", "-u", "nobody", "--", "emocall", "selftest")
    assert refused.returncode == 1 and "run it as root (sudo emocall selftest)" in refused.stderr


def test_install_refuses_a_unit_after_its_first_boot(root: Path) -> None:
    """install.sh makes images: on a unit it would remove the unit's SSH host keys, id and name."""
    done = root / "var/lib/emocall-firstboot.done"
    shutil.copy(IMAGE / "install.sh", root / "tmp/install.sh")
    (root / "etc/hostname").write_text("kitchen\n")
    done.touch()
    try:
        result = in_root(root, "bash", "/tmp/install.sh")
        assert result.returncode == 1 and "a unit after its first boot" in result.stderr
        assert (root / "etc/hostname").read_text() == "kitchen\n"
    finally:
        done.unlink()
        (root / "tmp/install.sh").unlink()
        (root / "etc/hostname").write_text("emocall\n")


def test_imagers_firstrun_is_pointed_at_and_cleans_up_the_boot_partition(root: Path) -> None:
    """Imager's command line runs /boot/firstrun.sh, and its last lines edit /boot/cmdline.txt; the
    card is at /boot/firmware (the whole start is proven by boot-test.sh --imager-firstrun). A power
    cut must never leave half a file on the card (FAT): the script and cmdline.txt are each written
    beside the old one, synced, and renamed over it; cmdline.txt is mended before the script is
    removed (the other way round, a cut leaves a command line that runs a script no longer there)."""
    boot = root / "boot/firmware"
    script = boot / "firstrun.sh"
    boot.mkdir(parents=True, exist_ok=True)
    script.write_text(
        FIRSTRUN.replace("exit 0\n", "sed -i 's| systemd.run.*||g' /boot/cmdline.txt\nexit 0\n")
    )
    script.chmod(0o755)
    cmdline = "console=tty1 root=LABEL=EMOCALLROOT rootwait quiet"
    imager = " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot"
    imager += " systemd.unit=kernel-command-line.target"
    (boot / "cmdline.txt").write_text(cmdline + imager + "\n")
    # Stand-ins that log, then run the real command: what reached the card, in which order.
    spy = root / "tmp/spy"
    spy.mkdir(exist_ok=True)
    for name in ("sync", "mv", "rm"):
        (spy / name).write_text(f'#!/bin/sh\necho "{name} $*" >>/tmp/spy/log\nexec /bin/{name} "$@"\n')
        (spy / name).chmod(0o755)
    path = "PATH=/tmp/spy:/usr/sbin:/usr/bin:/sbin:/bin"
    try:
        result = in_root(root, "env", path, "/usr/lib/emocall/emocall-imager-fixup")
        assert result.returncode == 0, result.stderr
        assert os.readlink(root / "boot/firstrun.sh") == "/boot/firmware/firstrun.sh"
        assert script.stat().st_mode & 0o777 == 0o755
        assert (spy / "log").read_text().splitlines() == [
            "sync /boot/firmware/firstrun.sh.new",
            "mv /boot/firmware/firstrun.sh.new /boot/firmware/firstrun.sh",
            "sync /boot/firmware",
        ]
        lines = script.read_text().splitlines()
        kept = "/usr/lib/userconf-pi/userconf 'asha' '$6$salt$hash'"
        assert kept in lines  # Imager's commands kept
        assert "rm -f /boot/firstrun.sh" not in lines
        (spy / "log").unlink()
        ending = "\n".join(lines[lines.index(kept) + 1 :])
        done = in_root(root, "env", path, "bash", "-c", ending)  # the script's own ending
        assert done.returncode == 0, done.stderr
        assert (boot / "cmdline.txt").read_text() == cmdline + "\n"
        assert (spy / "log").read_text().splitlines() == [
            "sync /boot/firmware/cmdline.txt.new",
            "mv /boot/firmware/cmdline.txt.new /boot/firmware/cmdline.txt",
            "sync /boot/firmware",
            "rm -f /boot/firmware/firstrun.sh /boot/firstrun.sh",
        ]
        assert not script.exists() and not (root / "boot/firstrun.sh").is_symlink()
        assert not list(boot.glob("*.new"))
    finally:
        shutil.rmtree(spy)
        script.unlink(missing_ok=True)
        (boot / "cmdline.txt").unlink(missing_ok=True)
        (root / "boot/firstrun.sh").unlink(missing_ok=True)


FirstBoot = Callable[[dict[str, str], tuple[str, ...]], subprocess.CompletedProcess[str]]


@pytest.fixture
def first_boot(root: Path) -> Iterator[FirstBoot]:
    """emocall-firstboot in the root with the given files on the boot partition (its own UTS
    namespace: `hostname` must not rename this machine); afterwards the root as the image ships it
    again, without the users the test names, for a later run against the same root."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) missing")
    made: list[str] = []

    def run(boot_files: dict[str, str], users: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        made.extend(users)
        (root / "etc/machine-id").write_text(
            "4f2a9c0d1e2b3c4d5e6f708192a3b4c5\n"
        )  # systemd writes it at boot
        boot = root / "boot/firmware"
        boot.mkdir(parents=True, exist_ok=True)
        for name, text in boot_files.items():
            (boot / name).write_text(text)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        return subprocess.run(
            ["unshare", "--uts", "chroot", str(root), "/usr/lib/emocall/emocall-firstboot"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    yield run
    for user in made:
        in_root(root, "userdel", "--remove", user)
    for leftover in (
        "etc/NetworkManager/system-connections/emocall-wifi.nmconnection",
        "boot/firmware/cmdline.txt",
        "boot/firmware/custom.toml",
        "boot/firmware/emocall.toml",
        "boot/firmware/userconf.txt",
        "boot/firmware/emocall-backup.tar",
    ):
        (root / leftover).unlink(missing_ok=True)
    for path in (
        "var/lib/emocall/identity.key",
        "var/lib/emocall/state.db",
        "etc/emocall/relay.password",
        "etc/emocall/unit.env",
        "etc/ssh/sshd_config.d/emocall.conf",
    ):
        (root / path).unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("emocall\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.copy(IMAGE / "files/config.toml", root / "etc/emocall/config.toml")
    in_root(root, "systemctl", "disable", "ssh.service")


def test_first_boot_applies_imager_settings_names_the_unit_and_makes_its_key(
    root: Path, first_boot: FirstBoot
) -> None:
    """Runs last: it adds what a flashed card gets at first boot (a user, SSH keys)."""
    custom = (
        'config_version = 1\n[user]\nname = "asha"\npassword = "$6$salt$hash"\npassword_encrypted = true\n'
        "[ssh]\nenabled = true\npassword_authentication = false\n"
        'authorized_keys = ["ssh-ed25519 AAAA test"]\n'
    )
    files = {"custom.toml": custom, "emocall.toml": '[camera]\nsource = "pattern"\n'}
    check_first_boot(root, first_boot(files, ("asha",)))


def test_first_boot_keeps_the_name_the_flasher_gave(root: Path, first_boot: FirstBoot) -> None:
    """A [unit] name in the flasher's emocall.toml was overridden by the name first boot made up
    (its environment file wins over the config file): the unit said "emocall 4821 is ready"."""
    result = first_boot({"emocall.toml": '[unit]\nname = "Grandma"\n'}, ())
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/emocall/unit.env").exists()
    shown = in_root(root, "/opt/emocall/venv/bin/emocall", "config")
    assert '"name": "Grandma"' in shown.stdout, shown.stdout + shown.stderr


def backup_of_asha(tmp_path: Path) -> tuple[bytes, bytes]:
    """A backup as the settings page makes it (a paired unit, a relay account), and the unit's key."""
    data, etc = asha_paired_with_bela(tmp_path), tmp_path / "etc"
    etc.mkdir()
    (etc / "config.toml").write_text(
        '[camera]\nsource = "pattern"\n[relay]\njid = "asha-1@relay.example.org"\n'
    )
    (etc / "relay.password").write_text("correct horse\n")
    archive = make_backup(data, "Asha", etc / "config.toml", etc / "relay.password")
    return archive, (data / "identity.key").read_bytes()


def test_first_boot_restores_a_backup_from_the_boot_partition(
    root: Path, first_boot: FirstBoot, tmp_path: Path
) -> None:
    """A new release flashed over a unit: the backup its owner put beside it makes it the same unit
    (key, pairings, name, relay account), for the service's user, and leaves the card."""
    archive, key = backup_of_asha(tmp_path)
    boot = root / "boot/firmware"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "emocall-backup.tar").write_bytes(archive)
    result = first_boot({"emocall.toml": '[camera]\nsource = "opencv"\n'}, ())
    assert result.returncode == 0, result.stderr
    assert "restored Asha" in result.stdout
    assert not (boot / "emocall-backup.tar").exists(), "the unit's key leaves the card once restored"
    assert (root / "var/lib/emocall/identity.key").read_bytes() == key
    owners = in_root(
        root,
        "stat",
        "-c",
        "%n %U %a",
        "/var/lib/emocall/identity.key",
        "/var/lib/emocall/state.db",
        "/etc/emocall/relay.password",
    )
    assert owners.stdout.split("\n")[:3] == [
        "/var/lib/emocall/identity.key emocall 600",
        "/var/lib/emocall/state.db emocall 600",
        "/etc/emocall/relay.password emocall 600",
    ], owners.stderr
    assert "asha-1@relay.example.org" in (root / "etc/emocall/config.toml").read_text()  # the backup's wins
    said = in_root(root, "/opt/emocall/venv/bin/python", "-c", PEERS_AND_NAME)
    assert said.stdout.split() == ["Bela", "Asha"], said.stderr
    # Cut short before it was done: first boot runs again, and the backup, still on the card, is
    # restored again; the flasher's file is not taken again over the configuration it restored.
    (boot / "emocall-backup.tar").write_bytes(archive)
    again = first_boot({"emocall.toml": '[camera]\nsource = "opencv"\n'}, ())
    assert again.returncode == 0, again.stderr
    assert "asha-1@relay.example.org" in (root / "etc/emocall/config.toml").read_text()
    assert not (boot / "emocall-backup.tar").exists()


def test_sudo_emocall_restore_restores_for_the_service_user(
    root: Path, first_boot: FirstBoot, tmp_path: Path
) -> None:
    """`sudo emocall restore` (the CLI's own hint) ran as the service's user, who may not write the
    configuration file: the restore could never succeed. It runs as root, as first boot's does.
    (``first_boot`` puts the root back as the image ships it afterwards.)"""
    archive, key = backup_of_asha(tmp_path)
    (root / "tmp/backup.tar").write_bytes(archive)
    try:
        result = in_root(root, "emocall", "restore", "/tmp/backup.tar")
    finally:
        (root / "tmp/backup.tar").unlink()
    assert result.returncode == 0 and "restored Asha" in result.stdout, result.stderr
    assert (root / "var/lib/emocall/identity.key").read_bytes() == key
    owners = in_root(
        root, "stat", "-c", "%U %a", "/var/lib/emocall/identity.key", "/var/lib/emocall/state.db"
    )
    assert owners.stdout.split("\n")[:2] == ["emocall 600", "emocall 600"], owners.stderr
    assert "asha-1@relay.example.org" in (root / "etc/emocall/config.toml").read_text()


PEERS_AND_NAME = """from pathlib import Path
from appliance.state import StateStore
store = StateStore(Path("/var/lib/emocall/state.db"))
print(*[p.name for p in store.peers()], store.settings().display_name)
store.close()"""


def test_first_boot_keeps_a_backup_it_cannot_restore_and_starts_a_new_unit(
    root: Path, first_boot: FirstBoot, tmp_path: Path
) -> None:
    archive, key = backup_of_asha(tmp_path)
    boot = root / "boot/firmware"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "emocall-backup.tar").write_bytes(archive[:2000])  # cut short on its way to the card
    result = first_boot({}, ())
    assert result.returncode == 0, result.stderr
    assert "was not restored" in result.stderr and "not an emocall backup" in result.stderr
    assert (boot / "emocall-backup.tar").read_bytes() == archive[:2000]  # nothing lost: try again
    assert (root / "var/lib/emocall/identity.key").read_bytes() != key
    assert "first boot done" in result.stdout


# What Imager writes for Raspberry Pi OS: the keys are given before the user exists.
FIRSTRUN = """#!/bin/bash
set +e
/usr/lib/raspberrypi-sys-mods/imager_custom set_hostname kitchen
/usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k 'ssh-ed25519 AAAA one' 'ssh-ed25519 AAAA two'
/usr/lib/userconf-pi/userconf 'asha' '$6$salt$hash'
rm -f /boot/firstrun.sh
exit 0
"""


def test_first_boot_applies_imagers_firstrun_in_its_order_and_every_good_setting(
    root: Path, first_boot: FirstBoot
) -> None:
    """The keys given before the user reach the user; a bad hostname in custom.toml is refused and
    the rest still applied; a password Imager left in plain text is hashed; custom.toml is removed."""
    custom = (
        '[system]\nhostname = "kitchen_pi"\n'
        '[user]\nname = "bela"\npassword = "correct horse"\npassword_encrypted = false\n'
        '[locale]\ntimezone = "Asia/Kolkata"\n'
        '[wlan]\nssid = "Home net"\npassword = "correct horse"\ncountry = "IN"\n'
    )
    cmdline = "console=tty1 root=LABEL=EMOCALLROOT rootwait cfg80211.ieee80211_regdom=GB\n"
    files = {"firstrun.sh": FIRSTRUN, "custom.toml": custom, "cmdline.txt": cmdline}
    result = first_boot(files, ("asha", "bela"))
    assert result.returncode == 0, result.stderr
    assert "hostname: hostname 'kitchen_pi' is not valid" in result.stderr
    assert (root / "etc/hostname").read_text() == "kitchen\n"
    assert (root / "etc/emocall/unit.env").read_text() == "EMOCALL_UNIT__NAME=kitchen\n"
    keys = (root / "home/asha/.ssh/authorized_keys").read_text()
    assert keys == "ssh-ed25519 AAAA one\nssh-ed25519 AAAA two\n"
    assert in_root(root, "stat", "-c", "%U %a", "/home/asha/.ssh/authorized_keys").stdout.split() == [
        "asha",
        "600",
    ]
    assert (root / "etc/ssh/sshd_config.d/emocall.conf").read_text() == "PasswordAuthentication no\n"
    hashed = in_root(root, "getent", "shadow", "bela").stdout.split(":")[1]
    assert hashed.startswith("$") and "correct horse" not in hashed
    assert (root / "etc/timezone").read_text() == "Asia/Kolkata\n"
    wifi = root / "etc/NetworkManager/system-connections/emocall-wifi.nmconnection"
    assert "ssid=Home net" in wifi.read_text() and wifi.stat().st_mode & 0o777 == 0o600
    regdom = "console=tty1 root=LABEL=EMOCALLROOT rootwait cfg80211.ieee80211_regdom=IN\n"
    assert (
        root / "boot/firmware/cmdline.txt"
    ).read_text() == regdom  # the radio's channels, from the next start
    assert not (root / "etc/emocall/ssh-keys-pending").exists()
    assert (
        not (root / "boot/firmware/custom.toml").exists()
        and not (root / "boot/firmware/firstrun.sh").exists()
    )


def test_first_boot_removes_imagers_secrets_even_when_a_setting_fails(
    root: Path, first_boot: FirstBoot
) -> None:
    """A userconf.txt that cannot be applied (a user name useradd refuses) is reported, the rest of
    Imager's settings are still applied, and neither file (a password hash, the Wi-Fi password) stays
    on the boot partition, which anyone can read."""
    custom = '[locale]\ntimezone = "Europe/Lisbon"\n[wlan]\nssid = "Home net"\npassword = "correct horse"\n'
    files = {"userconf.txt": "Not A User:$6$salt$hash\n", "custom.toml": custom}
    result = first_boot(files, ())
    assert result.returncode == 0, result.stderr  # the unit is still named and given its key
    assert "not applied: user: useradd failed" in result.stderr
    assert (root / "etc/timezone").read_text() == "Europe/Lisbon\n"
    boot = root / "boot/firmware"
    assert not (boot / "userconf.txt").exists() and not (boot / "custom.toml").exists()


def test_a_long_host_name_gives_the_unit_a_name_it_can_start_with(root: Path, first_boot: FirstBoot) -> None:
    """Imager takes a host name of up to 63 letters, a unit's name has 40 at most: the whole of it
    in unit.env stopped the unit at every start ("cannot start")."""
    host = "grandmas-video-phone-in-the-living-room-by-the-tv"
    result = first_boot({"custom.toml": f'[system]\nhostname = "{host}"\n'}, ())
    assert result.returncode == 0, result.stderr
    assert (root / "etc/hostname").read_text() == f"{host}\n"
    name = (root / "etc/emocall/unit.env").read_text().removeprefix("EMOCALL_UNIT__NAME=").rstrip("\n")
    assert name == "grandmas video phone in the living room"
    assert load(None, environ={"EMOCALL_UNIT__NAME": name}).unit.name == name


def test_first_boot_fails_when_the_unit_key_cannot_be_made(root: Path, first_boot: FirstBoot) -> None:
    """The identity key is what the unit is known by: first boot that cannot make it fails (and runs
    again at the next start) instead of saying it is done."""
    (root / "var/lib/emocall/identity.key").write_text("not a key\n")
    result = first_boot({}, ())
    assert result.returncode != 0
    assert "is not an emocall identity key" in result.stderr
    assert "first boot done" not in result.stdout


def check_first_boot(root: Path, result: subprocess.CompletedProcess[str]) -> None:
    boot = root / "boot/firmware"
    assert result.returncode == 0, result.stderr
    host = (root / "etc/hostname").read_text().strip()
    assert host == f"emocall-{0x4F2A9C % 10000:04d}"
    assert (root / "etc/emocall/unit.env").read_text() == f"EMOCALL_UNIT__NAME={host.replace('-', ' ')}\n"
    assert "unit id:" in result.stdout
    key = root / "var/lib/emocall/identity.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert in_root(root, "stat", "-c", "%U", "/var/lib/emocall/identity.key").stdout.strip() == "emocall"
    assert in_root(root, "getent", "shadow", "asha").stdout.split(":")[1] == "$6$salt$hash"
    assert (root / "home/asha/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA test\n"
    assert (root / "etc/systemd/system/multi-user.target.wants/ssh.service").is_symlink() or (
        root / "etc/systemd/system/sshd.service"
    ).is_symlink()
    assert list((root / "etc/ssh").glob("ssh_host_*_key")), "host keys are made when SSH is enabled"
    assert (root / "etc/emocall/config.toml").read_text() == '[camera]\nsource = "pattern"\n'
    assert not (boot / "custom.toml").exists(), "Imager's settings (a password hash) are removed once applied"


def imager_custom(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """files/firstboot/imager_custom.py in this process, its boot partition a folder here and a
    stand-in `iw` first on PATH (the regulatory domain of this machine is left alone)."""
    spec = importlib.util.spec_from_file_location("imager_custom", IMAGE / "files/firstboot/imager_custom.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    boot, bin_dir = tmp_path / "boot", tmp_path / "bin"
    boot.mkdir()
    bin_dir.mkdir()
    (bin_dir / "iw").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "iw").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(module, "BOOT", boot)
    return module


def test_the_wifi_country_replaces_cmdline_txt_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The boot loader reads cmdline.txt: a power cut while it is rewritten must leave the old one or
    the new one. The new text reaches the card in a file of its own, which is then renamed over the
    old one; a write that fails leaves the old one as it was, and nothing beside it."""
    module = imager_custom(monkeypatch, tmp_path)
    cmdline = tmp_path / "boot/cmdline.txt"
    cmdline.write_text("console=tty1 root=LABEL=EMOCALLROOT rootwait cfg80211.ieee80211_regdom=GB\n")
    old = tmp_path / "old-cmdline.txt"
    os.link(cmdline, old)  # the old file's own data, as a power cut would find it
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (synced.append(f"replace {Path(b).name}"), real_replace(a, b))
    )
    module.set_country("IN")
    assert (
        cmdline.read_text() == "console=tty1 root=LABEL=EMOCALLROOT rootwait cfg80211.ieee80211_regdom=IN\n"
    )
    assert old.read_text().endswith("regdom=GB\n")  # never truncated or written in place
    assert synced[:2] == [f"{cmdline}.new", "replace cmdline.txt"], synced
    assert sorted(p.name for p in cmdline.parent.iterdir()) == ["cmdline.txt"]

    def card_fails(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", card_fails)
    with pytest.raises(OSError):
        module.set_country("DE")
    assert cmdline.read_text().endswith("regdom=IN\n")
    assert sorted(p.name for p in cmdline.parent.iterdir()) == ["cmdline.txt"]


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    """A dependency added to pyproject.toml but not locked (bash image-build/lock.sh) is missing on a unit."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {Requirement(d).name.lower().replace("_", "-") for d in project["dependencies"]}
    lock = (IMAGE / "requirements.lock").read_text()
    pinned = {line.split("==")[0].lower() for line in lock.splitlines() if "==" in line and line[0].isalpha()}
    assert wanted <= pinned, f"not in requirements.lock (run bash image-build/lock.sh): {wanted - pinned}"
    blocks = [b for b in lock.split("\n") if "==" in b and b[0].isalpha()]
    assert all(b.rstrip().endswith("\\") for b in blocks), "every pin carries its hashes"
