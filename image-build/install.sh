#!/usr/bin/env bash
# Turns a Debian bookworm or Raspberry Pi OS (bookworm, arm64) root filesystem into an emocall unit.
# Runs INSIDE that root (chroot, pi-gen's on_chroot, or a machine not yet booted as a unit) as
# root, from a copy of the repository:   bash /path/to/emocall/image-build/install.sh
# It makes an image: it removes the SSH host keys, the machine id and the hostname, which every
# unit makes at its first boot, so it refuses to run on a unit that has had its first boot.
# Both image flavours call it (build.sh, pi-gen/stage-emocall/00-run.sh); CI runs it into a root
# filesystem (tests/test_image_install.py).
# Environment: PIP_CERT / PIP_INDEX_URL are passed on to pip where the build host needs them;
# EMOCALL_SKIP_APT=1 leaves the Debian packages to the caller (they must already be installed).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
here=$src/image-build
files=$here/files
venv=/opt/emocall/venv
state=/var/lib/emocall

say() { printf 'install.sh: %s\n' "$*" >&2; }

install_packages() {
  [ "${EMOCALL_SKIP_APT:-0}" = 1 ] && return
  say "Debian packages"
  apt-get update -q
  # shellcheck disable=SC2046  # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    $(grep -hv '^#' "$here/packages.txt")
}

# The service user and the device groups its unit names (a group that does not exist stops the unit).
create_user() {
  say "user emocall"
  local g
  for g in gpio apex plugdev video audio; do getent group "$g" >/dev/null || groupadd --system "$g"; done
  getent passwd emocall >/dev/null ||
    useradd --system --user-group --home-dir "$state" --no-create-home --shell /usr/sbin/nologin emocall
  usermod -a -G video,gpio,audio,plugdev,apex emocall
  install -d -o emocall -g emocall -m 0700 "$state"
}

# A virtualenv that also sees the system's packages: on Raspberry Pi OS picamera2 and libcamera come
# only from apt. Every locked package whose exact version the system lacks goes into the venv (numpy
# 1.26, which apt's simplejpeg accepts); --require-hashes refuses anything the lock does not name
# with its sha256. Run again on an installed root, pip only checks.
create_venv() {
  say "virtualenv $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
  PIP_NO_CACHE_DIR=1 "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
    --require-hashes --only-binary=:all: -r "$here/requirements.lock"
  local build
  build=$(mktemp -d)
  cp -r "$src/appliance" "$src/pyproject.toml" "$src/README.md" "$build/"
  PIP_NO_CACHE_DIR=1 "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
    --no-build-isolation --no-index "$build"
  rm -rf "$build"
  "$venv/bin/python" -m compileall -q "$venv/lib" >/dev/null || true
}

# A link to imager_custom.py where there is no such command, or where an earlier install put ours (a
# copy, before: a root reused by build.sh's cache kept the old one).
imager_command() {
  if [ ! -e "$1" ] || [ -L "$1" ] || grep -q "honoured on an emocall image" "$1"; then
    install -d "$(dirname "$1")"
    ln -sfn /usr/lib/emocall/imager_custom.py "$1"
  fi
}

install_files() {
  say "configuration, units and models"
  install -D -m 0644 "$files/systemd/emocall.service" /etc/systemd/system/emocall.service
  install -D -m 0644 "$files/systemd/emocall-firstboot.service" /etc/systemd/system/emocall-firstboot.service
  install -D -m 0644 "$files/systemd/emocall-hotspot.service" /etc/systemd/system/emocall-hotspot.service
  install -D -m 0644 "$files/systemd/emocall-clock-save.service" /etc/systemd/system/emocall-clock-save.service
  install -D -m 0644 "$files/systemd/emocall-clock-save.timer" /etc/systemd/system/emocall-clock-save.timer
  install -D -m 0644 "$files/systemd/emocall-imager-fixup.service" /etc/systemd/system/emocall-imager-fixup.service
  install -D -m 0755 "$files/firstboot/emocall-imager-fixup" /usr/lib/emocall/emocall-imager-fixup
  install -D -m 0755 "$files/firstboot/emocall-firstboot" /usr/lib/emocall/emocall-firstboot
  install -D -m 0755 "$files/firstboot/imager_custom.py" /usr/lib/emocall/imager_custom.py
  # The commands Imager's firstrun.sh calls: Raspberry Pi OS has its own, Debian gets ours.
  ln -sf imager_custom.py /usr/lib/emocall/imager_custom
  imager_command /usr/lib/raspberrypi-sys-mods/imager_custom
  imager_command /usr/lib/userconf-pi/userconf
  install -D -m 0755 "$files/network/emocall-hotspot" /usr/lib/emocall/emocall-hotspot
  # `sudo emocall selftest` and the other commands, as the service runs them (files/bin/emocall).
  install -D -m 0755 "$files/bin/emocall" /usr/bin/emocall
  # Always this release's: a root from build.sh's cache holds the previous one (first boot replaces it
  # with the flasher's emocall.toml where there is one).
  install -D -m 0644 "$files/config.toml" /etc/emocall/config.toml
  install -D -m 0644 "$files/pipewire/50-emocall-echo-cancel.conf" \
    /etc/pipewire/pipewire.conf.d/50-emocall-echo-cancel.conf
  install -D -m 0644 "$files/journald/emocall.conf" /etc/systemd/journald.conf.d/50-emocall.conf
  install -D -m 0644 "$files/udev/60-emocall.rules" /etc/udev/rules.d/60-emocall.rules
  rm -rf /usr/share/emocall/models/edgetpu  # a cached root's may hold files this release dropped
  install -d /usr/share/emocall/models/edgetpu
  install -m 0644 "$src"/models/edgetpu/emotion.json "$src"/models/edgetpu/*.tflite /usr/share/emocall/models/edgetpu/
}

# PipeWire runs per user: emocall lingers, so its user manager (and PipeWire, WirePlumber) starts at
# boot without a login; the service finds it through XDG_RUNTIME_DIR (issue 19.1).
wire_audio() {
  say "PipeWire for the service user"
  local uid
  uid=$(id -u emocall)
  install -d /var/lib/systemd/linger
  touch /var/lib/systemd/linger/emocall
  install -d /etc/systemd/system/emocall.service.d
  cat >/etc/systemd/system/emocall.service.d/10-audio.conf <<EOF
# Written by image-build/install.sh: emocall's user manager runs PipeWire (uid $uid).
[Unit]
Wants=user@$uid.service
After=user@$uid.service
[Service]
Environment=XDG_RUNTIME_DIR=/run/user/$uid
EOF
}

enable_units() {
  say "units"
  systemctl enable emocall.service emocall-firstboot.service emocall-hotspot.service NetworkManager.service \
    emocall-clock-save.timer emocall-imager-fixup.service
  systemctl --global enable pipewire.socket wireplumber.service 2>/dev/null || true
  # SSH stays off unless the flasher enabled it (first boot turns it on then).
  systemctl disable ssh.service 2>/dev/null || true
  # No unattended apt on an appliance: it writes the card and the network may be metered.
  systemctl mask apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
  # /tmp in memory: the root is read-mostly. At most 64 MiB: the unit enabled in /etc outranks the
  # fstab's line (flavour 2), and its own size (half the RAM) would let /tmp fill a 1 GiB Pi's memory
  # before it ever reports full.
  systemctl unmask tmp.mount 2>/dev/null || true
  if [ -f /usr/share/systemd/tmp.mount ]; then systemctl enable /usr/share/systemd/tmp.mount 2>/dev/null || true; fi
  install -d /etc/systemd/system/tmp.mount.d
  printf '[Mount]\nOptions=mode=1777,strictatime,nosuid,nodev,size=64M,nr_inodes=1m\n' \
    >/etc/systemd/system/tmp.mount.d/10-emocall-size.conf
}

# Nothing unit-specific or secret may stay in the image: every unit makes its own at first boot.
scrub() {
  say "scrub: keys, machine id, caches"
  rm -f /etc/ssh/ssh_host_*
  : >/etc/machine-id
  rm -f /var/lib/dbus/machine-id
  passwd -l root >/dev/null
  echo emocall >/etc/hostname
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache /var/cache/debconf/*-old /tmp/* /var/tmp/*
  find /var/log -type f -exec truncate -s 0 {} +
}

main() {
  [ "$(id -u)" -eq 0 ] || { say "run as root"; exit 1; }
  if [ -e /var/lib/emocall-firstboot.done ]; then
    say "this is a unit after its first boot: installing here would remove its SSH host keys, machine id and name"
    say "update a unit with a new image (it starts as new: image-build/README.md, Flashing) or pip install the package into $venv"
    exit 1
  fi
  install_packages
  create_user
  create_venv
  install_files
  wire_audio
  enable_units
  scrub
  local version
  version=$("$venv/bin/emocall" --version)
  say "done: $version"
}

main "$@"
