#!/usr/bin/env bash
# Builds the Canopy image from Containerfile, offline: the binaries come from this machine, so no
# base image is pulled. Uses docker when a docker daemon answers, podman otherwise (with runc and
# explicit ulimits, which this kind of host needs).
#
#   scripts/build-image.sh [--bin-dir DIR] [--tag IMAGE]
#
# --bin-dir  where canopy-driver and canopy-executor are (default target/release). A static
#            build needs no C library in the image:
#            RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
#            then --bin-dir target/x86_64-unknown-linux-gnu/release. Otherwise the libraries the
#            binaries link (ldd) are copied in from this machine.
# --tag      default localhost/canopy:<version>, the chart's default image.
# Prints the image's size and fails above 300 MB: each binary carries the Parquet and DataFusion
# pipeline since executors read their own rows (216 MB from the dev build, 2026-11-26).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"
bin_dir="$root/target/release"
tag="localhost/canopy:$version"
max_mb=300
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "build-image.sh: unknown argument '$1' (expected --bin-dir DIR or --tag IMAGE)" >&2; exit 2 ;;
  esac
done
for bin in canopy-driver canopy-executor; do
  if [ ! -x "$bin_dir/$bin" ]; then
    echo "build-image.sh: $bin_dir/$bin is missing: build it first (cargo build --release)" >&2
    exit 1
  fi
done

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi
if [ "$engine" = podman ]; then
  # shellcheck source=scripts/podman-env.sh
  . "$root/scripts/podman-env.sh"
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
for bin in canopy-driver canopy-executor; do
  strip --strip-all -o "$rootfs/usr/local/bin/$bin" "$bin_dir/$bin"
  # The C libraries and the loader at the paths the binary names (nothing for a static build).
  for lib in $(ldd "$bin_dir/$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
done
printf 'root:x:0:0:root:/root:/sbin/nologin\ncanopy:x:65532:65532:canopy:/tmp:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\ncanopy:x:65532:\n' > "$rootfs/etc/group"
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
# The CA bundle, for https:// object stores (s3://, gs://, az://) and Pushgateways.
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then
  mkdir -p "$rootfs/etc/ssl/certs"
  cp -L "$ca" "$rootfs$ca"
else
  echo "build-image.sh: $ca is missing (Debian's ca-certificates); the image will not verify https servers" >&2
fi
cp "$root/Containerfile" "$context/Containerfile"

if ! "$engine" build --network=none -f "$context/Containerfile" -t "$tag" "$context" > "$context/build.log" 2>&1; then
  cat "$context/build.log" >&2
  echo "build-image.sh: $engine build failed" >&2
  exit 1
fi
bytes="$("$engine" image inspect --format '{{.Size}}' "$tag")"
mb=$(( (bytes + 999999) / 1000000 ))
echo "built $tag with $engine: $mb MB"
if [ "$mb" -gt "$max_mb" ]; then
  echo "build-image.sh: the image is $mb MB, over the $max_mb MB limit" >&2
  exit 1
fi
