#!/usr/bin/env bash
# Runs every test: starts the backend servers on 127.0.0.1 (scripts/services.sh), runs
# `cargo test --all-features`, stops the servers it started.
# Set LE_EXTERNAL_SERVICES=1 to use servers you run yourself (e.g. `docker compose up -d`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${LE_EXTERNAL_SERVICES:-0}" != 1 ]]; then
  trap 'scripts/services.sh down' EXIT
  scripts/services.sh up
fi
cargo test --all-features "$@"
