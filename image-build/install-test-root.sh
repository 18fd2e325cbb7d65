#!/usr/bin/env bash
# Builds a Debian bookworm root filesystem for THIS machine's architecture and runs install.sh in it,
# the way build.sh does for the arm64 image, without emulation or a kernel:
#   sudo bash image-build/install-test-root.sh DIR
# tests/test_image_install.py runs it in CI and then checks the unit inside DIR; the full image
# (arm64, kernel, boot) is only made by build.sh and proven by boot-test.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"
root=${1:?usage: install-test-root.sh DIR}

build() {
  local include
  include=$(grep -hv '^#' "$here/packages-debian.txt" "$here/packages.txt" | tr -s ' \n' ',')
  mmdebstrap --variant=minbase --include="${include%,}" --aptopt='Acquire::Retries "3"' \
    bookworm "$root" "deb ${EMOCALL_MIRROR:-http://deb.debian.org/debian} bookworm main"
}

install_emocall() {
  install -d "$root/tmp/emocall-src"
  # Tracked and new (not ignored) files: the working tree as it is, without build outputs.
  git -C "$repo" ls-files --cached --others --exclude-standard appliance models/edgetpu image-build pyproject.toml README.md |
    (cd "$repo" && tar -cf - -T -) | tar -C "$root/tmp/emocall-src" -xf -
  cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
  trap 'unmount_root "$root"' EXIT
  mount_root "$root"
  # The packages are already in the root: mmdebstrap installed them above.
  in_root "$root" env PIP_CERT=/tmp/host-ca.crt EMOCALL_SKIP_APT=1 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} bash /tmp/emocall-src/image-build/install.sh
  unmount_root "$root"
  rm -rf "$root/tmp/emocall-src" "$root/tmp/host-ca.crt"
}

need_root
need_tools mmdebstrap chroot
[ -d "$root/usr" ] || step "root filesystem (mmdebstrap, $(dpkg --print-architecture))" build
step "install.sh in the root" install_emocall
