#!/usr/bin/env bash
# Make the two local base images the Dockerfile can start FROM when no registry is reachable:
#   fastflow-base:bookworm        Debian bookworm minbase + python3            (runtime stage)
#   fastflow-base-build:bookworm  the same + python3-dev, python3-venv, gcc    (builder stage)
# Each is made once (debootstrap --variant=minbase, ~2 min) and reused while its tag exists.
# Usage: deploy/make-base-images.sh [--force]      (root; needs debootstrap and a Docker engine)
set -euo pipefail
force=0; [[ "${1:-}" == "--force" ]] && force=1
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[[ -n "$mirror" ]] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[[ -n "$mirror" ]] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

make_base() {   # tag packages
  local tag=$1 pkgs=$2
  if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag: cached"; return
  fi
  local root; root=$(mktemp -d /var/tmp/fastflow-rootfs.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  echo "$tag: debootstrap bookworm from $mirror (+ $pkgs)"
  debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["python3"]' - "$tag" >/dev/null
  echo "$tag: imported ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
}

make_base fastflow-base:bookworm python3,ca-certificates
make_base fastflow-base-build:bookworm python3,python3-dev,python3-venv,gcc,libc6-dev
