#!/usr/bin/env bash
# The demo, from a fresh Debian 12 machine: installs what is missing (scripts/setup.sh), then starts
# a local etcd and a 3-node PostgreSQL 15 cluster run by pgwarden agents. Ctrl-C stops everything.
# Extra arguments go to `pgwarden demo` (see `pgwarden demo --help`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$REPO/scripts/setup.sh" | tail -n 1)"
exec "$VENV/bin/pgwarden" demo "$@"
