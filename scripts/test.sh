#!/usr/bin/env bash
# Runs every test: starts the backend servers on 127.0.0.1 (scripts/services.sh), runs
# `cargo test --all-features` (and, with LE_SCALE_SMOKE=1, the scale benchmark's quick smoke),
# stops the servers it started.
# Set LE_EXTERNAL_SERVICES=1 to use servers you run yourself (e.g. `docker compose up -d`); the
# ODBC tests then generate their own driver registry unless ODBCSYSINI is set. SQL Server's
# tests run only with LE_MSSQL_ODBC set (see the README); otherwise they say they did not run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${LE_EXTERNAL_SERVICES:-0}" != 1 ]]; then
  trap 'scripts/services.sh down' EXIT
  scripts/services.sh up
  # The project's ODBC driver registry (psqlODBC's per-connection CommLog off).
  export ODBCSYSINI="${ODBCSYSINI:-${LE_SERVICES_DIR:-/tmp/leader-election-services}/odbc}"
fi
cargo test --all-features "$@"
# CI also runs the scale benchmark's quick smoke against the same servers.
if [[ "${LE_SCALE_SMOKE:-0}" == 1 ]]; then
  cargo bench --bench scale --all-features -- --quick
fi
