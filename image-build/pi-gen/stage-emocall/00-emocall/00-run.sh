#!/bin/bash -e
# pi-gen stage for emocall units (flavour 1: Raspberry Pi OS Lite bookworm arm64). Runs on the build
# host with pi-gen's ROOTFS_DIR and on_chroot. The unit itself is made by the same install script as
# flavour 2; this stage adds what only Raspberry Pi OS has or needs: picamera2 from the Raspberry Pi
# archive (00-packages) and the Edge TPU runtime pair pinned in files/coral.lock.
# Not buildable on the emocall development machine (no Raspberry Pi archive there).
stage=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$stage/../../../.." && pwd)
downloads="${WORK_DIR:-/tmp}/emocall-downloads"
# The Edge TPU files wait in the root outside /tmp: install.sh's scrub empties /tmp before they are
# installed.
staged=/var/cache/emocall-stage

# Download each pinned file once; a missing or different sha256 stops the build.
fetch_pinned() {
  local sum name url
  mkdir -p "$downloads"
  grep -v '^#' "$stage/files/coral.lock" | while read -r sum name url; do
    [ -n "$name" ] || continue
    if [ "$sum" = UNPINNED ]; then
      echo "coral.lock: no sha256 for $name; check a download by hand and write its sum there" >&2
      exit 1
    fi
    [ -f "$downloads/$name" ] || curl -fsSL --retry 3 -o "$downloads/$name" "$url"
    echo "$sum  $downloads/$name" | sha256sum -c --quiet -
  done
}

# The Edge TPU model: compiled on the build host (edgetpu_compiler runs on x86-64 only) next to the
# CPU model, so the unit ships both and picks at run time.
compile_edgetpu_model() {
  local model="$repo/models/edgetpu/emotion_int8.tflite"
  if ! command -v edgetpu_compiler >/dev/null; then
    echo "edgetpu_compiler not found: install Coral's edgetpu-compiler package on the build host" >&2
    exit 1
  fi
  edgetpu_compiler -s -o "$downloads" "$model"
  install -m 0644 "$downloads/emotion_int8_edgetpu.tflite" "$ROOTFS_DIR$staged/emotion_int8_edgetpu.tflite"
}

fetch_pinned
install -d "$ROOTFS_DIR/tmp/emocall-src"
git -C "$repo" archive HEAD appliance models/edgetpu image-build pyproject.toml README.md |
  tar -C "$ROOTFS_DIR/tmp/emocall-src" -xf -
install -d "$ROOTFS_DIR$staged"
cp "$downloads"/libedgetpu1-std_*.deb "$downloads"/tflite_runtime-*.whl "$ROOTFS_DIR$staged/"
compile_edgetpu_model

on_chroot <<CHROOT
set -e
bash /tmp/emocall-src/image-build/install.sh
dpkg -i $staged/libedgetpu1-std_*.deb
# One TFLite runtime in the venv, the one libedgetpu was built against (TF 2.17.1): ai-edge-litert is
# far newer and the delegate would crash in it. appliance/vision/litert.py falls back to tflite_runtime.
/opt/emocall/venv/bin/pip uninstall -y -q ai-edge-litert
/opt/emocall/venv/bin/pip install -q --no-deps --no-cache-dir $staged/tflite_runtime-*.whl
install -m 0644 $staged/emotion_int8_edgetpu.tflite /usr/share/emocall/models/edgetpu/
rm -rf $staged /tmp/emocall-src
CHROOT
