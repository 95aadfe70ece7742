#!/usr/bin/env bash
# The whole test suite: installs the tools the tests use when they are missing (Debian's
# prometheus and prometheus-pushgateway; dashboards/check.sh fetches its npm and PyPI tools),
# checks formatting and lints (rustfmt, clippy -D warnings), runs `cargo test --workspace`,
# then the offline dashboard checks.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (Debian packages) for the observability tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace 2>&1 | tee "$log"
dashboards/check.sh 2>&1 | tee -a "$log"
# One closing line for everything (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 }
     /^dashboards: [0-9]+ passed/ { p += $2; f += $4 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
