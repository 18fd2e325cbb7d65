#!/usr/bin/python3
"""Raspberry Pi Imager's OS customisation, honoured on an emocall image.

Imager writes its settings to the card's boot partition in one of three forms, all read here:
- ``custom.toml`` (hostname, user, SSH, Wi-Fi, locale), read by :func:`apply_custom_toml`;
- ``userconf.txt`` (``user:password-hash``) and an empty ``ssh`` file (headless set-up);
- ``firstrun.sh``, which calls ``/usr/lib/raspberrypi-sys-mods/imager_custom`` and
  ``/usr/lib/userconf-pi/userconf``: on the Debian flavour this script is installed under both
  names, so the same commands work there too (:func:`main` dispatches on the name it is called by).
Each setting is applied with the system's own tools (argument lists, timeouts). One that fails is
reported and the others are still applied, as Raspberry Pi OS's ``init_config`` does: a first boot
happens once, and Imager's file (passwords in it) is removed from the card whatever happened.
"""

from __future__ import annotations

import grp
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

BOOT = Path("/boot/firmware")
TIMEOUT = 60
# Imager's firstrun.sh enables SSH with the keys before it creates the user: they wait here.
PENDING_KEYS = Path("/etc/emocall/ssh-keys-pending")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class CustomisationError(Exception):
    pass


def _run(*argv: str, stdin: str | None = None) -> None:
    try:
        subprocess.run(argv, input=stdin, text=True, check=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError) as e:
        raise CustomisationError(f"{argv[0]} failed: {e}") from e


def set_hostname(name: str) -> None:
    if not HOSTNAME.fullmatch(name):
        raise CustomisationError(f"hostname {name!r} is not valid (letters, digits and hyphens only)")
    Path("/etc/hostname").write_text(name + "\n")
    hosts = Path("/etc/hosts")
    old = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    lines = [ln for ln in old if not ln.startswith("127.0.1.1")]
    hosts.write_text("\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")
    _run("hostname", name)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def set_user(name: str, password: str, *, encrypted: bool = True) -> None:
    """The flasher's login user (there is none by default and no default password); the SSH keys
    given before it existed are its own."""
    groups = ",".join(g for g in ("sudo", "audio", "video", "plugdev", "netdev") if _group_exists(g))
    existing = subprocess.run(["id", name], capture_output=True, timeout=TIMEOUT).returncode == 0
    if not existing:
        _run("useradd", "--create-home", "--shell", "/bin/bash", "--groups", groups, name)
    # A password Imager left in plain text (password_encrypted = false) is hashed by chpasswd.
    _run("chpasswd", *(["-e"] if encrypted else []), stdin=f"{name}:{password}\n")
    if PENDING_KEYS.is_file():
        _authorize(name, PENDING_KEYS.read_text().split("\n"))
        PENDING_KEYS.unlink()


def _authorize(user: str, keys: list[str]) -> None:
    ssh_dir = Path(f"~{user}").expanduser() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text("".join(f"{k}\n" for k in keys if k.strip()))
    (ssh_dir / "authorized_keys").chmod(0o600)
    _run("chown", "-R", f"{user}:{user}", str(ssh_dir))


def enable_ssh(keys: list[str], user: str | None, password_login: bool) -> None:
    if keys and user:
        _authorize(user, keys)
    elif keys:  # no user yet: set_user gives them to the user it makes
        PENDING_KEYS.parent.mkdir(parents=True, exist_ok=True)
        PENDING_KEYS.touch(mode=0o600)
        PENDING_KEYS.write_text("\n".join(keys) + "\n")
    conf = Path("/etc/ssh/sshd_config.d/emocall.conf")
    conf.write_text(f"PasswordAuthentication {'yes' if password_login else 'no'}\n")
    _run("ssh-keygen", "-A")
    _run("systemctl", "enable", "ssh.service")
    if Path("/run/systemd/system").is_dir():  # booted with systemd (not a chroot): start it now
        _run("systemctl", "start", "--no-block", "ssh.service")


def set_wlan(ssid: str, password: str, country: str, hidden: bool = False) -> None:
    """A NetworkManager connection that the unit joins at every boot."""
    name = "emocall-wifi"
    subprocess.run(["nmcli", "connection", "delete", name], capture_output=True, timeout=TIMEOUT)
    args = ["nmcli", "--offline", "connection", "add", "type", "wifi", "con-name", name, "ssid", ssid]
    args += ["wifi.hidden", "yes" if hidden else "no", "connection.autoconnect-priority", "10"]
    if password:
        args += ["wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", password]
    keyfile = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if keyfile.returncode != 0:
        raise CustomisationError(f"nmcli could not make the Wi-Fi connection: {keyfile.stderr.strip()}")
    path = Path(f"/etc/NetworkManager/system-connections/{name}.nmconnection")
    path.touch(mode=0o600)
    path.write_text(keyfile.stdout)
    if country:
        set_country(country)
    # A running NetworkManager reads new files only when told. Where it is not running (Imager's
    # firstrun.sh runs before it starts) the reload fails, and NetworkManager reads the file at start.
    subprocess.run(["nmcli", "connection", "reload"], capture_output=True, timeout=TIMEOUT, check=False)


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` so that a power cut leaves the old file or the new one, never a part: the new
    text goes to a file beside it, reaches the card (fsync), and is renamed over the old one. On FAT
    (the boot partition) the rename is one directory-entry update, atomic enough for cmdline.txt,
    which the boot loader must find whole."""
    new = path.with_name(path.name + ".new")
    try:
        with new.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(new, path)
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    try:  # the rename itself on the card too
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass


def set_country(country: str) -> None:
    """The Wi-Fi regulatory domain (which channels may be used), as Raspberry Pi OS sets it: on the
    kernel command line from the next start, and at once; without it the radio keeps to the
    channels allowed everywhere and may not see the home's network."""
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise CustomisationError(f"Wi-Fi country {country!r} is not a two-letter code such as GB or IN")
    cmdline = BOOT / "cmdline.txt"
    if cmdline.is_file():
        args = [a for a in cmdline.read_text().split() if not a.startswith("cfg80211.ieee80211_regdom=")]
        replace_file(cmdline, " ".join([*args, f"cfg80211.ieee80211_regdom={country}"]) + "\n")
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["iw", "reg", "set", country], capture_output=True, timeout=TIMEOUT, check=False)


def set_timezone(zone: str) -> None:
    if (Path("/usr/share/zoneinfo") / zone).is_file():
        Path("/etc/localtime").unlink(missing_ok=True)
        Path("/etc/localtime").symlink_to(Path("/usr/share/zoneinfo") / zone)
        Path("/etc/timezone").write_text(zone + "\n")


def apply_custom_toml(path: Path) -> tuple[list[str], list[str]]:
    """Apply Imager's custom.toml; what was set and what failed (each section tried), for the log."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CustomisationError(f"{path} is not readable TOML ({e}); re-run Raspberry Pi Imager") from e
    system, user, ssh = data.get("system", {}), data.get("user", {}), data.get("ssh", {})
    wlan, locale = data.get("wlan", {}), data.get("locale", {})
    done: list[str] = []
    failed: list[str] = []

    def attempt(name: str, apply: Callable[[], None]) -> None:
        try:
            apply()
            done.append(name)
        except (CustomisationError, OSError, TypeError, KeyError) as e:
            failed.append(f"{name}: {e}")

    if system.get("hostname"):
        attempt("hostname", lambda: set_hostname(system["hostname"]))
    if user.get("name") and user.get("password"):
        encrypted = bool(user.get("password_encrypted", True))
        attempt("user", lambda: set_user(user["name"], user["password"], encrypted=encrypted))
    if ssh.get("enabled"):
        keys, password_login = list(ssh.get("authorized_keys", [])), bool(ssh.get("password_authentication"))
        attempt("ssh", lambda: enable_ssh(keys, user.get("name"), password_login))
    if wlan.get("ssid"):
        country, hidden = wlan.get("country", ""), bool(wlan.get("hidden"))
        attempt("wlan", lambda: set_wlan(wlan["ssid"], wlan.get("password", ""), country, hidden))
    if locale.get("timezone"):
        attempt("timezone", lambda: set_timezone(locale["timezone"]))
    return done, failed


def apply_headless_files(boot: Path) -> tuple[list[str], list[str]]:
    """userconf.txt and ssh / ssh.txt, Raspberry Pi OS's headless set-up files; what was set and what
    failed. userconf.txt (a password hash) is removed whatever happened."""
    done: list[str] = []
    failed: list[str] = []
    userconf = boot / "userconf.txt"
    user = None
    if userconf.is_file():
        try:
            name, _, password_hash = userconf.read_text().strip().partition(":")
            if not name or not password_hash:  # "name" alone would be a login without a password
                raise CustomisationError(f"{userconf} is not user:password-hash")
            set_user(name, password_hash)
            user = name
            done.append("user")
        except (CustomisationError, OSError, UnicodeDecodeError) as e:
            failed.append(f"user: {e}")
        finally:
            userconf.unlink(missing_ok=True)
    for flag in (boot / "ssh", boot / "ssh.txt"):
        if flag.exists():
            try:
                enable_ssh([], user, password_login=True)
                done.append("ssh")
            except (CustomisationError, OSError) as e:
                failed.append(f"ssh: {e}")
            flag.unlink(missing_ok=True)
    return done, failed


def _imager_command(argv: list[str]) -> None:
    """The subcommands firstrun.sh calls on Raspberry Pi OS (raspberrypi-sys-mods' imager_custom)."""
    command, args = argv[0], argv[1:]
    if command == "set_hostname":
        set_hostname(args[0])
    elif command == "enable_ssh":
        # "enable_ssh -k KEY..." for keys only, "enable_ssh" for password logins (Imager's two forms).
        keys = [a for a in args if a not in ("-k", "-p")]
        user = subprocess.run(["id", "-nu", "1000"], capture_output=True, text=True, timeout=TIMEOUT).stdout
        enable_ssh(keys, user.strip() or None, password_login=not keys or "-p" in args)
    elif command == "set_wlan":
        hidden = "-h" in args
        ssid, password, country = [a for a in args if a not in ("-h", "-p")][:3]
        set_wlan(ssid, password, country, hidden)
    elif command == "set_timezone":
        set_timezone(args[0])
    elif command == "set_keymap":
        pass  # no keyboard on the unit
    else:
        raise CustomisationError(f"unknown imager_custom command {command!r}")


def main(argv: list[str]) -> int:
    called = Path(argv[0]).name
    try:
        if called == "imager_custom":
            _imager_command(argv[1:])
        elif called == "userconf":
            set_user(argv[1], argv[2])
        else:
            return _apply_boot_files()
    except (CustomisationError, IndexError, OSError) as e:
        print(f"imager customisation: {e}", file=sys.stderr)
        return 1
    return 0


def _apply_boot_files() -> int:
    custom = BOOT / "custom.toml"
    try:
        done, failed = apply_headless_files(BOOT)
        if custom.is_file():
            try:
                applied, not_applied = apply_custom_toml(custom)
                done += applied
                failed += not_applied
            except CustomisationError as e:
                failed.append(str(e))
    finally:
        # Password hashes and the Wi-Fi password, on a partition anyone can read: gone in every case,
        # once what they gave is on the card (the root commits every 30 s: a power cut before would
        # run first boot again without them, no user, SSH key or Wi-Fi).
        os.sync()
        for secret in (custom, BOOT / "userconf.txt"):
            secret.unlink(missing_ok=True)
    print(f"Imager customisation: {', '.join(done) or 'none'}")
    for failure in failed:
        print(f"imager customisation, not applied: {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
