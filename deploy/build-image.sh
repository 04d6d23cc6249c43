#!/usr/bin/env bash
# Build the fastflow image without a registry or network inside the build:
#   1. local base images from debootstrap (deploy/make-base-images.sh; made once, cached by tag),
#   2. a wheelhouse in deploy/wheels/ (pip download on this host: runtime + build dependencies),
#   3. docker build --network none from those bases, installing only from the wheelhouse.
# Usage: deploy/build-image.sh [TAG]        (default fastflow:<version>; also tagged fastflow:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)
tag=${1:-fastflow:$version}
bash deploy/make-base-images.sh
if ! ls deploy/wheels/numpy-*.whl >/dev/null 2>&1 || [[ -n "${FASTFLOW_REFRESH_WHEELS:-}" ]]; then
  echo "wheelhouse: pip download into deploy/wheels"
  python3 -m pip download -q -d deploy/wheels --only-binary=:all: \
    "numpy>=1.26" "docker>=7.0" "uvloop>=0.19" "setuptools>=77" wheel "cython>=3.0"
fi
echo "docker build $tag (offline)"
docker build -q --network none \
  --build-arg BUILD_BASE=fastflow-base-build:bookworm \
  --build-arg RUNTIME_BASE=fastflow-base:bookworm \
  --build-arg PIP_OFFLINE=1 -t "$tag" -t fastflow:latest . >/dev/null
docker run --rm --network none "$tag" --version
