#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing (scripts/setup.sh),
# then lint, type checks, the import layers, unit tests and integration tests against real etcd and PostgreSQL.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/core -x`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$REPO/scripts/setup.sh" | tail -n 1)"
cd "$REPO"
echo "== ruff"
"$VENV/bin/ruff" check pgwarden tests benchmarks
echo "== mypy"
"$VENV/bin/mypy" pgwarden
echo "== lint-imports"
# The layers of docs/ARCHITECTURE.md ([tool.importlinter] in pyproject.toml); no cache left in the tree.
"$VENV/bin/lint-imports" --no-cache
echo "== pytest"
exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
