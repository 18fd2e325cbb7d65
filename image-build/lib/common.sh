# shellcheck shell=bash
# Helpers shared by build.sh, install-test-root.sh and boot-test.sh: timed, logged steps, the stage
# cache, chroot mounts and the run of install.sh inside a root.

# shellcheck disable=SC2034  # used by the scripts that source this file
CACHE_DIR="${EMOCALL_IMAGE_CACHE:-/var/cache/emocall-image}"
BUILD_START=$(date +%s)

log() { printf '%s [%4ds] %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - BUILD_START ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# step NAME COMMAND...: runs COMMAND, then logs how long it took (the durations the README quotes).
step() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  log "start: $name"
  "$@"
  log "done:  $name ($(( $(date +%s) - t0 )) s)"
}

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root: sudo bash $0"; }

need_tools() {
  local t missing=()
  for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (apt-get install mmdebstrap arch-test qemu-user-static binfmt-support qemu-system-arm dosfstools mtools e2fsprogs fdisk zstd xz-utils openssh-client curl openssl)"
}

# arm64 binaries in a chroot run through qemu-user; binfmt_misc may need mounting first.
enable_binfmt() {
  [ "$(uname -m)" = aarch64 ] && return 0
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 binfmt is not registered (install qemu-user-static binfmt-support)"
}

# key FILES...: a short hash of the inputs of a stage, so a changed input rebuilds that stage only.
key() { cat "$@" | sha256sum | cut -c1-12; }

# Bind the kernel file systems into a root for chroot; unmount_root undoes it (also on failure).
mount_root() {
  local root=$1 d
  for d in proc sys dev dev/pts; do mkdir -p "$root/$d"; done
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
  mount --bind /dev "$root/dev"
  mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666
}

unmount_root() {
  local root=$1 d
  for d in dev/pts dev sys proc; do
    mountpoint -q "$root/$d" && umount -R "$root/$d"
  done
  return 0
}

# remove_root ROOT: deletes a root filesystem, never what is still mounted in it (the host's /dev
# when an unmount failed: a process left running in the chroot keeps it busy).
remove_root() {
  unmount_root "$1"
  rm -rf --one-file-system "$1"
}

# in_root ROOT COMMAND...: runs COMMAND in ROOT with a clean environment (pip needs the CA bundle
# of the root itself and no host variables such as PIP_* or VIRTUAL_ENV).
in_root() {
  local root=$1
  shift
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"
}

# source_files REPO: what install.sh reads, tracked or new, never git-ignored build outputs (paths
# relative to REPO). The image and CI's test root both copy exactly these.
source_files() {
  git -C "$1" ls-files --cached --others --exclude-standard appliance models/edgetpu pyproject.toml \
    README.md image-build/install.sh image-build/packages.txt image-build/requirements.lock image-build/files |
    grep -v '^image-build/files/boot/'
}

# run_install REPO ROOT [VAR=value...]: install.sh inside ROOT, from a copy of REPO's source_files,
# with the variables given; pip uses the host's CA bundle (which may hold a proxy's certificate) for
# the install only. The caller's EXIT trap unmounts ROOT if install.sh fails.
run_install() {
  local repo=$1 root=$2
  shift 2
  install -d "$root/tmp/emocall-src"
  source_files "$repo" | (cd "$repo" && tar -cf - -T -) | tar -C "$root/tmp/emocall-src" -xf -
  cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
  mount_root "$root"
  in_root "$root" env PIP_CERT=/tmp/host-ca.crt "$@" bash /tmp/emocall-src/image-build/install.sh
  unmount_root "$root"
  rm -rf "$root/tmp/emocall-src" "$root/tmp/host-ca.crt"
}
