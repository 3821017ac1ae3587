#!/usr/bin/env bash
# Installs everything pgwarden's demo and test suite need on a Debian 12 machine, idempotently:
# Debian packages (etcd-server, PostgreSQL 15 if absent), the postgres user, and a virtualenv
# built from Debian's /usr/bin/python3 (the postgres user must be able to run it) holding
# pgwarden and its dependencies. Prints the venv path on its last line.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGWARDEN_VENV:-/opt/pgwarden/venv}"
PG_BIN="/usr/lib/postgresql/15/bin"

log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
[ -x "$PG_BIN/postgres" ] || need_pkgs+=(postgresql-15 postgresql-client-15)
# psycopg's C layer (pgwarden[c]) is built against the system libpq: a compiler and the headers.
command -v pg_config >/dev/null 2>&1 || need_pkgs+=(libpq-dev)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
[ -e /usr/include/python3.11/Python.h ] || need_pkgs+=(python3-dev)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
command -v runuser >/dev/null 2>&1 || need_pkgs+=(util-linux)
# Traffic routing (HAProxy, PgBouncer, vip-manager) and network namespaces for the routing tests.
command -v haproxy >/dev/null 2>&1 || need_pkgs+=(haproxy)
command -v pgbouncer >/dev/null 2>&1 || need_pkgs+=(pgbouncer)
command -v vip-manager >/dev/null 2>&1 || need_pkgs+=(vip-manager)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# ZooKeeper 3.8 (a Java server) for the ZooKeeper DCS backend's tests.
[ -e /usr/share/java/zookeeper.jar ] || need_pkgs+=(zookeeper)
# pgBackRest: the backup tool of the disaster-recovery tests (archive, restore, replicas from a repository).
command -v pgbackrest >/dev/null 2>&1 || need_pkgs+=(pgbackrest)
# The chaos suite's faults inside its network namespaces: nftables (partitions, one-way and random loss)
# and libfaketime (clock steps for one agent).
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v faketime >/dev/null 2>&1 || need_pkgs+=(faketime)
for extra in ${PGWARDEN_EXTRA_PKGS:-}; do need_pkgs+=("$extra"); done
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages from starting their own etcd/PostgreSQL services.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

if ! id postgres >/dev/null 2>&1; then
  log "creating the postgres user"
  useradd --system --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres
fi

stamp="$VENV/.pgwarden-deps"
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV from /usr/bin/python3"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  pip_log="$(mktemp)"
  if ! "$VENV/bin/pip" install -q "$REPO[dev,c]" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2; rm -f "$pip_log"
    log "pip install failed"; exit 1
  fi
  grep -v -e '^WARNING: Location' -e BuildBackendWarning "$pip_log" >&2 || true
  rm -f "$pip_log"
  # The agent should run psycopg's C layer on the system libpq (pgwarden[c]), not a fallback.
  impl="$("$VENV/bin/python" -c 'import psycopg; print(psycopg.pq.__impl__)')"
  [ "$impl" = c ] || log "warning: psycopg uses its '$impl' implementation, not 'c'"
  echo "$want" > "$stamp"
fi
# Install the current tree. Editable when the postgres user can read the checkout (agents run as
# postgres); otherwise a copy, so the venv never points into a directory postgres cannot read.
if runuser -u postgres -- test -r "$REPO/pgwarden/__init__.py" 2>/dev/null; then
  "$VENV/bin/pip" install -q --no-deps -e "$REPO" >/dev/null 2>&1
else
  "$VENV/bin/pip" install -q --no-deps --force-reinstall "$REPO" >/dev/null 2>&1
fi
chmod -R a+rX "$(dirname "$VENV")"

# Patroni itself, for the migration tests only: a black box in its own virtualenv (from Debian's
# python3, so the postgres user can run it), driven through its command line, config and REST API.
PATRONI_VENV="${PGWARDEN_PATRONI_VENV:-/opt/patroni/venv}"
PATRONI_WANT='patroni[etcd3]==4.1.* psycopg[binary]>=3.1,<4'
if [ "$(cat "$PATRONI_VENV/.pgwarden-patroni" 2>/dev/null)" != "$PATRONI_WANT" ]; then
  log "installing Patroni 4.1 into $PATRONI_VENV (for the migration tests)"
  [ -x "$PATRONI_VENV/bin/python" ] || { mkdir -p "$(dirname "$PATRONI_VENV")"; /usr/bin/python3 -m venv "$PATRONI_VENV"; }
  # shellcheck disable=SC2086  # the wanted requirements are words
  patroni_log="$(mktemp)"
  if ! "$PATRONI_VENV/bin/pip" install -q $PATRONI_WANT >"$patroni_log" 2>&1; then
    cat "$patroni_log" >&2; rm -f "$patroni_log"; log "installing Patroni failed"; exit 1
  fi
  rm -f "$patroni_log"
  echo "$PATRONI_WANT" > "$PATRONI_VENV/.pgwarden-patroni"
  chmod -R a+rX "$(dirname "$PATRONI_VENV")"
fi
echo "$VENV"
