#!/usr/bin/env bash
# Builds flavour 2 of the SD image: Debian bookworm arm64 with the Pi 3/4 boot pieces, made an emocall
# unit by install.sh, assembled into a compressed .img without loop devices.
#   sudo bash image-build/build.sh [--stage base|kernel|emocall|image]
# Each stage is cached as a tarball under $EMOCALL_IMAGE_CACHE (default /var/cache/emocall-image),
# keyed by a hash of its inputs, so a repeated or failed build resumes at the first changed stage.
# The image lands in $EMOCALL_IMAGE_OUT (default $EMOCALL_IMAGE_CACHE/out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

SUITE=bookworm
MIRROR=${EMOCALL_MIRROR:-http://deb.debian.org/debian}
SECURITY=${EMOCALL_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
OUT_DIR=${EMOCALL_IMAGE_OUT:-$CACHE_DIR/out}
BOOT_MIB=256
DATA_MIB=64
last_stage=image
[ "${1:-}" = "--stage" ] && last_stage=${2:?--stage needs base, kernel, emocall or image}

packages() { grep -hv '^#' "$@" | tr -s ' \n' ' '; }

source_key() { (cd "$repo" && source_files . | sort | xargs sha256sum) | sha256sum | cut -c1-12; }

base_key=$(key "$here/packages-debian.txt" <(echo "$SUITE minbase v1"))
kernel_key=$(key <(echo "$base_key") "$here/packages-kernel.txt" "$here"/files/initramfs/*)
base_tar=$CACHE_DIR/base-$base_key.tar.zst
kernel_tar=$CACHE_DIR/kernel-$kernel_key.tar.zst

# A cached stage keeps the packages of the day it was built: nothing upgrades them afterwards.
warn_if_old() {
  local days=$(( ($(date +%s) - $(stat -c %Y "$1")) / 86400 ))
  [ "$days" -lt 7 ] || log "WARNING: $1 is $days days old: its packages lack later security updates;" \
    "for a release, build from an empty cache (remove $CACHE_DIR/*.tar.zst)"
}

stage_base() {
  [ -f "$base_tar" ] && { log "cached: $base_tar"; warn_if_old "$base_tar"; return; }
  local include
  include=$(packages "$here/packages-debian.txt" | tr ' ' ',')
  mmdebstrap --variant=minbase --architectures=arm64 --components=main,non-free-firmware \
    --include="${include%,}" --aptopt='Acquire::Retries "3"' \
    "$SUITE" "$CACHE_DIR/base.part.tar.zst" \
    "deb $MIRROR $SUITE main non-free-firmware" \
    "deb $MIRROR $SUITE-updates main non-free-firmware" \
    "deb $SECURITY $SUITE-security main non-free-firmware"
  mv "$CACHE_DIR/base.part.tar.zst" "$base_tar"
}

# The kernel's postinst and every firmware package regenerate the initramfs; under emulation each run
# takes minutes, so update-initramfs is diverted during the install and run once afterwards.
install_kernel() {
  local root=$1
  install -D -m 0644 "$here/files/initramfs/emocall.conf" "$root/etc/initramfs-tools/conf.d/emocall.conf"
  install -D -m 0644 "$here/files/initramfs/modules" "$root/etc/initramfs-tools/modules"
  in_root "$root" dpkg-divert --local --rename --add /usr/sbin/update-initramfs
  printf '#!/bin/sh\nexit 0\n' >"$root/usr/sbin/update-initramfs"
  chmod 0755 "$root/usr/sbin/update-initramfs"
  in_root "$root" apt-get update -q
  # shellcheck disable=SC2046  # one word per package
  in_root "$root" apt-get install -y -q --no-install-recommends $(packages "$here/packages-kernel.txt")
  rm "$root/usr/sbin/update-initramfs"
  in_root "$root" dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
  in_root "$root" update-initramfs -c -k all
  in_root "$root" apt-get clean
}

# extract TAR: a fresh root directory under the cache, unmounted and removed again on exit.
extract() {
  root=$(mktemp -d "$CACHE_DIR/root.XXXX")
  trap 'remove_root "$root"' EXIT
  tar -C "$root" --zstd -xpf "$1"
}

pack() {
  local root=$1 tarball=$2
  unmount_root "$root"
  tar -C "$root" --zstd -cpf "$CACHE_DIR/pack.part.tar.zst" .
  mv "$CACHE_DIR/pack.part.tar.zst" "$tarball"
  remove_root "$root"
  trap - EXIT
}

stage_kernel() {
  [ -f "$kernel_tar" ] && { log "cached: $kernel_tar"; warn_if_old "$kernel_tar"; return; }
  extract "$base_tar"
  mount_root "$root"
  install_kernel "$root"
  pack "$root" "$kernel_tar"
}

# The locked wheels, downloaded (and hash-checked) by the host's pip: pip under emulation needs many
# minutes for what it does here in seconds; inside the root it then installs from this folder only.
fetch_wheels() {
  local pip glibc platforms=(--platform manylinux2014_aarch64 --platform linux_aarch64)
  pip=$(command -v pip3 || command -v pip) || die "pip is needed on the build host (apt-get install python3-pip)"
  # pip does not widen a manylinux tag to the older ones: name each glibc up to bookworm's 2.36.
  for glibc in $(seq 17 36); do platforms+=(--platform "manylinux_2_${glibc}_aarch64"); done
  "$pip" download -q --disable-pip-version-check --no-deps --require-hashes --only-binary=:all: \
    "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    -d "$CACHE_DIR/wheels" -r "$here/requirements.lock"
}

# install.sh inside the root (run_install), pip installing from the host's download of the locked
# wheels only. A root with the packages and the locked venv of an earlier run is the starting point when there is
# one (install.sh run again there only checks them), else the kernel stage's.
stage_emocall() {
  local deps_tar
  emocall_tar=$CACHE_DIR/emocall-$kernel_key-$(source_key).tar.zst
  deps_tar=$CACHE_DIR/deps-$(key <(echo "$kernel_key") "$here/packages.txt" "$here/requirements.lock").tar.zst
  [ -f "$emocall_tar" ] && { log "cached: $emocall_tar"; return; }
  if [ -f "$deps_tar" ]; then extract "$deps_tar"; else extract "$kernel_tar"; fi
  fetch_wheels
  cp -r "$CACHE_DIR/wheels" "$root/tmp/wheels"
  run_install "$repo" "$root" PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels
  install -D -m 0644 "$here/files/fstab" "$root/etc/fstab"
  rm -rf "$root/tmp/wheels"
  if [ ! -f "$deps_tar" ]; then
    tar -C "$root" --zstd -cpf "$deps_tar.part" . && mv "$deps_tar.part" "$deps_tar"
  fi
  pack "$root" "$emocall_tar"
}

# The FAT boot partition a Pi 3/4 starts from: the GPU firmware, the device trees, the kernel, the
# initramfs, config.txt and cmdline.txt (the same pieces raspi-firmware's hooks copy).
boot_files() {
  local root=$1 boot=$2 version
  version=$(basename "$(ls -d "$root"/usr/lib/linux-image-*)" | sed 's/linux-image-//')
  install -d "$boot"
  cp "$root"/usr/lib/raspi-firmware/* "$boot/"
  # upstream_kernel=1 (config.txt) makes the firmware look for the mainline names: bcm2837 (Pi 3), bcm2711 (Pi 4).
  cp "$root"/usr/lib/linux-image-"$version"/broadcom/bcm{2837,2711}-rpi-*.dtb "$boot/"
  cp "$root/boot/vmlinuz-$version" "$boot/vmlinuz"
  cp "$root/boot/initrd.img-$version" "$boot/initrd.img"
  cp "$here/files/boot/config.txt" "$boot/config.txt"
  cp "$here/files/boot/cmdline.txt" "$boot/cmdline.txt"
}

# Partitions as files (mkfs.vfat -C + mcopy, mkfs.ext4 -d), then placed into one MBR disk image:
# boot (FAT, RASPIFIRM), root (ext4, EMOCALLROOT), state (ext4, EMOCALLDATA; grows at first boot).
stage_image() {
  local work boot_img root_img data_img root_mib img total
  extract "$emocall_tar"
  work=$(mktemp -d "$CACHE_DIR/image.XXXX")
  # shellcheck disable=SC2064  # expanded now: $work is local to this function
  trap "remove_root '$root'; rm -rf '$work'" EXIT
  boot_files "$root" "$work/boot"
  # What raspi-firmware's hooks copied into the root's /boot/firmware would hide under the FAT mount.
  find "$root/boot/firmware" -mindepth 1 -delete
  # mmdebstrap copies this machine's resolv.conf (its name servers, its search domains) into the
  # root; NetworkManager writes the unit's own when it joins a network.
  rm -f "$root/etc/resolv.conf"
  boot_img=$work/boot.vfat root_img=$work/root.ext4 data_img=$work/data.ext4
  mkfs.vfat -C -n RASPIFIRM "$boot_img" $((BOOT_MIB * 1024)) >/dev/null
  mcopy -s -i "$boot_img" "$work/boot"/* ::
  install -d "$work/data"
  chown --reference="$root/var/lib/emocall" "$work/data"
  chmod --reference="$root/var/lib/emocall" "$work/data"
  # Under the mount point, hidden while the state partition is mounted: a unit that finds it knows
  # the partition did not mount, and says it cannot start rather than start as new (appliance/card.py).
  touch "$root/var/lib/emocall/.state-partition-not-mounted"
  root_mib=$(( $(du -sm --exclude=./proc --exclude=./sys "$root" | cut -f1) * 12 / 10 + 200 ))
  mkfs.ext4 -q -L EMOCALLROOT -d "$root" "$root_img" "${root_mib}M"
  # First boot grows the state partition to the card: made with mke2fs's small-disk defaults (1 KiB
  # blocks, an inode per 4 KiB, a 4 MiB journal) it would keep them, 1.8 GiB of inode tables on a
  # 32 GB card and a journal every write (data=journal) goes through. A unit keeps a few files.
  mkfs.ext4 -q -b 4096 -i 65536 -J size=16 -L EMOCALLDATA -d "$work/data" "$data_img" "${DATA_MIB}M"
  img=$OUT_DIR/emocall-arm64.img
  total=$((1 + BOOT_MIB + root_mib + DATA_MIB))
  rm -f "$img" && truncate -s "${total}M" "$img"
  sfdisk -q "$img" <<PARTS
label: dos
start=1MiB, size=${BOOT_MIB}MiB, type=c, bootable
size=${root_mib}MiB, type=83
type=83
PARTS
  dd if="$boot_img" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$root_img" of="$img" bs=1M seek=$((1 + BOOT_MIB)) conv=notrunc,sparse status=none
  dd if="$data_img" of="$img" bs=1M seek=$((1 + BOOT_MIB + root_mib)) conv=notrunc,sparse status=none
  rm -rf "$work"
  # zstd: Raspberry Pi Imager and balenaEtcher read .zst; xz took over 10 minutes here.
  zstd -q -T0 -10 --rm -f "$img" -o "$img.zst"
  log "image: $img.zst ($(du -m "$img.zst" | cut -f1) MiB compressed, ${total} MiB on the card before it grows)"
  echo "$img.zst"
}

main() {
  need_root
  need_tools mmdebstrap arch-test chroot zstd mkfs.vfat mcopy mkfs.ext4 sfdisk
  enable_binfmt
  mkdir -p "$CACHE_DIR" "$OUT_DIR"
  step "base root filesystem (mmdebstrap, arm64)" stage_base
  [ "$last_stage" = base ] && return
  step "kernel and Pi firmware (under emulation)" stage_kernel
  [ "$last_stage" = kernel ] && return
  step "emocall (install.sh in the root)" stage_emocall
  [ "$last_stage" = emocall ] && return
  step "disk image" stage_image
  log "build took $(( $(date +%s) - BUILD_START )) s"
}

main "$@"
