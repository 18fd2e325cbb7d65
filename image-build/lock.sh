#!/usr/bin/env bash
# Regenerates requirements.lock: pyproject.toml's dependencies plus requirements.in, resolved for the
# image (Linux aarch64, Python 3.11), with the sha256 of every file of every pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
"$uv" pip compile pyproject.toml image-build/requirements.in \
  --python-version 3.11.2 --python-platform aarch64-unknown-linux-gnu \
  --generate-hashes --no-header --quiet -o image-build/requirements.lock
