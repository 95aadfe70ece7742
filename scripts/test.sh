#!/usr/bin/env bash
# The whole test suite: installs the tools the tests use when they are missing (Debian's
# prometheus and prometheus-pushgateway, podman with runc, netavark and aardvark-dns;
# dashboards/check.sh and helm/check.sh fetch their npm and PyPI tools, and moto's S3 server comes
# from PyPI into target/tools/moto), checks formatting and
# lints (rustfmt, clippy -D warnings), runs `cargo test --workspace`, the offline dashboard
# checks, then the chart and image checks (helm/check.sh: the binaries just built, in containers).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
if [ "$(id -u)" = 0 ] && { ! command -v podman >/dev/null 2>&1 || [ ! -x /usr/lib/podman/aardvark-dns ]; }; then
  missing+=(podman runc netavark aardvark-dns iptables)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (Debian packages) for the observability and container tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# moto's S3 API server for the remote-data tests (driver/tests/remote.rs), from PyPI.
moto=target/tools/moto
if [ ! -x "$moto/bin/moto_server" ]; then
  python3 -m venv "$moto"
  "$moto/bin/pip" install --quiet 'moto[server]==5.2.5'
fi
export CANOPY_MOTO_SERVER="$PWD/$moto/bin/moto_server"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace 2>&1 | tee "$log"
dashboards/check.sh 2>&1 | tee -a "$log"
helm/check.sh 2>&1 | tee -a "$log"
# One closing line for everything (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 }
     /^(dashboards|helm): [0-9]+ passed/ { p += $2; f += $4 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
