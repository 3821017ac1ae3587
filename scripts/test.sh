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
if (($#)); then
  echo "== pytest"
  exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
fi
# The whole suite as two processes at once: the tests that start real servers (marked integration: they
# mostly wait on processes, timeouts and the network) and the rest (the decision core, properties, the
# simulator: CPU bound), the latter at a lower priority so that the servers' timing is not disturbed.
unit_log="$(mktemp)"
nice -n 10 "$VENV/bin/pytest" -q -p no:cacheprovider -m "not integration" >"$unit_log" 2>&1 &
unit_pid=$!
trap 'kill "$unit_pid" 2>/dev/null || true; rm -f "$unit_log"' EXIT
echo "== pytest -m integration (the other tests run alongside; their output follows)"
set +e
# Two workers (pytest-xdist): these tests mostly wait on servers, so two at a time nearly halve the wall
# time on CI's two cores. `loadscope` keeps a module's (or a class's) tests on one worker, so module- and
# class-scoped clusters are built once; tests/conftest.py gives each worker ports of its own.
"$VENV/bin/pytest" -q -p no:cacheprovider -m integration -n 2 --dist loadscope
integration_rc=$?
wait "$unit_pid"
unit_rc=$?
set -e
echo "== pytest -m 'not integration'"
cat "$unit_log"
if ((integration_rc)); then exit "$integration_rc"; fi
exit "$unit_rc"
