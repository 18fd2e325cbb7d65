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

# The same sources build.sh copies into the image (source_files); the packages are already in the
# root: mmdebstrap installed them above.
install_emocall() {
  trap 'unmount_root "$root"' EXIT
  run_install "$repo" "$root" EMOCALL_SKIP_APT=1 ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL}
}

need_root
need_tools mmdebstrap chroot
[ -d "$root/usr" ] || step "root filesystem (mmdebstrap, $(dpkg --print-architecture))" build
step "install.sh in the root" install_emocall
