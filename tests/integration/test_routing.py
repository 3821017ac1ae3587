"""Traffic follows the primary through real HAProxy and PgBouncer, driven by `pgwarden route`.

One cluster (etcd + three agents) for the whole module, with one HAProxy (config from `pgwarden
haproxy-config`), one PgBouncer (its `[databases]` from an include file) and one sidecar driving both.
Two writers run at ~100 writes/s, one through each path; each write returns the port of the server
that took it, so we check where writes land and that none reaches a demoted node. A watcher polls
`pg_is_in_recovery()` on every node every 20 ms to time promotions. Numbers are printed (`-s`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"
PGBOUNCER_BIN = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PASSWORD = "demo-superuser-secret"
SWITCHOVERS = 3

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not all(Path(p).exists() for p in (ETCD_BIN, Path(PG_BIN, "postgres"), HAPROXY_BIN,
                                                          PGBOUNCER_BIN)),
                       reason="needs etcd, PostgreSQL 15, haproxy and pgbouncer (scripts/setup.sh)"),
]


# -- the routers --------------------------------------------------------------------------------------


@dataclass
class Routers:
    cluster: LocalCluster
    workdir: Path
    haproxy_port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    pgbouncer_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "haproxy.sock"

    def haproxy_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.haproxy_port} user=postgres dbname=postgres password={PASSWORD}"

    def pgbouncer_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.pgbouncer_port} user=postgres dbname=postgres"

    def start(self) -> None:
        config = _pgwarden("haproxy-config", "-c", str(self.cluster.nodes[0].config_path),
                           "--bind", "127.0.0.1", "--primary-port", str(self.haproxy_port),
                           "--replica-port", str(free_port()), "--stats-port", str(self.stats_port),
                           "--admin-socket", str(self.socket), "--check-interval", "1000")
        (self.workdir / "haproxy.cfg").write_text(config)
        subprocess.run([HAPROXY_BIN, "-c", "-q", "-f", str(self.workdir / "haproxy.cfg")], check=True, timeout=10)
        self._spawn("haproxy", [HAPROXY_BIN, "-db", "-f", str(self.workdir / "haproxy.cfg")])
        self._start_pgbouncer()
        wait_until(lambda: self.socket.exists(), 10, "the HAProxy admin socket")
        self._spawn("route", [sys.executable, "-c", "from pgwarden.cli.routing import route; route()",
                              "-c", str(self.cluster.nodes[0].config_path), "--name", "it-router",
                              "--haproxy-socket", str(self.socket),
                              "--pgbouncer", f"host=127.0.0.1 port={self.pgbouncer_port} user=admin",
                              "--pgbouncer-databases-file", str(self.workdir / "databases.ini"),
                              "--pgbouncer-database", "postgres"])

    def _start_pgbouncer(self) -> None:
        (self.workdir / "databases.ini").write_text("")  # `pgwarden route` fills it in
        (self.workdir / "users.txt").write_text(f'"postgres" "{PASSWORD}"\n"admin" ""\n')
        (self.workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"%include {self.workdir / 'databases.ini'}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.pgbouncer_port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.workdir / 'users.txt'}\nadmin_users = admin\n"
            "pool_mode = transaction\ndefault_pool_size = 5\n"
            "server_login_retry = 0.1\nquery_wait_timeout = 30\n")
        user = pwd.getpwnam("postgres")
        for path in (self.workdir, *self.workdir.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}
        self._spawn("pgbouncer", [PGBOUNCER_BIN, str(self.workdir / "pgbouncer.ini")], **kwargs)

    def _spawn(self, name: str, argv: list[str], **kwargs: object) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                           **kwargs))  # type: ignore[call-overload]
        log.close()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def dump_logs(self) -> None:
        for name in ("route", "pgbouncer", "haproxy"):
            with contextlib.suppress(OSError):
                print(f"==== {name} log (tail)")
                print("\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-40:]))


def _pgwarden(*args: str) -> str:
    return subprocess.run([sys.executable, "-c", "from pgwarden.cli.routing import haproxy_config; haproxy_config()",
                           *args[1:]], check=True, capture_output=True, text=True, timeout=30).stdout


# -- load and observation ----------------------------------------------------------------------------


@dataclass
class Write:
    at: float
    port: int | None  # None: failed
    error: str = ""


class Writer:
    """~100 single-statement transactions per second through one DSN, each recording the server port."""

    def __init__(self, name: str, dsn: str, rate: float = 100.0) -> None:
        self.name, self.dsn, self.period = name, dsn, 1.0 / rate
        self.writes: list[Write] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2, prepare_threshold=None)
                row = conn.execute("INSERT INTO routing_it (path) VALUES (%s) RETURNING inet_server_port()",
                                   (self.name,)).fetchone()
                self.writes.append(Write(time.monotonic(), int(row[0]) if row else None))
            except psycopg.Error as exc:
                self.writes.append(Write(time.monotonic(), None, str(exc).strip().splitlines()[0][:120]))
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def since(self, t: float) -> list[Write]:
        return [w for w in self.writes if w.at >= t]


class PromotionClock:
    """Polls every node every 20 ms; records when each became writable (NOT pg_is_in_recovery())."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.writable_at: dict[str, float] = {}
        self.readonly_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promotion-clock", daemon=True)

    def __enter__(self) -> PromotionClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conns: dict[str, psycopg.Connection] = {}
        while not self._stop.is_set():
            for node in self.cluster.nodes:
                writable = self._writable(node, conns)
                now = time.monotonic()
                if writable:
                    self.writable_at.setdefault(node.name, now)
                    self.readonly_at.pop(node.name, None)
                else:
                    self.readonly_at.setdefault(node.name, now)
                    self.writable_at.pop(node.name, None)
            self._stop.wait(0.02)
        for conn in conns.values():
            conn.close()

    def _writable(self, node: Node, conns: dict[str, psycopg.Connection]) -> bool:
        try:
            conn = conns.get(node.name)
            if conn is None or conn.closed:
                conn = psycopg.connect(self.cluster.conninfo(node), autocommit=True, connect_timeout=1)
                conns[node.name] = conn
            row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
        except psycopg.Error:
            conns.pop(node.name, None)
            return False


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routed() -> Iterator[tuple[LocalCluster, Routers]]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-routing-"))
    workdir.chmod(0o755)
    cluster = LocalCluster(workdir / "cluster", scope="routing-it", etcd_ports=(0, 0), pg_base_port=0,
                           api_base_port=0)
    routers = Routers(cluster, workdir / "routers")
    routers.workdir.mkdir()
    try:
        cluster.start()
        leader = cluster.wait_healthy(120)
        _sql(cluster, leader, "CREATE TABLE routing_it (id bigserial PRIMARY KEY, path text, at timestamptz "
                              "DEFAULT clock_timestamp())")
        routers.start()
        wait_until(lambda: _lands_on(routers.haproxy_dsn()) == leader.pg_port
                   and _lands_on(routers.pgbouncer_dsn()) == leader.pg_port, 30, "both paths to reach the primary")
        yield cluster, routers
    except BaseException:
        routers.dump_logs()
        raise
    finally:
        routers.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def logs_on_failure(routed: tuple[LocalCluster, Routers], request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        routed[1].dump_logs()


def _sql(cluster: LocalCluster, node: Node, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def _lands_on(dsn: str) -> int | None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2, prepare_threshold=None) as conn:
            row = conn.execute("INSERT INTO routing_it (path) VALUES ('probe') RETURNING inet_server_port()"
                               ).fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def _post(node: Node, path: str, body: dict[str, object], timeout: float = 60) -> tuple[int, str]:
    request = urllib.request.Request(node.api_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _no_write_on_demoted(writer: Writer, old: Node, demoted_at: float) -> None:
    late = [w for w in writer.since(demoted_at) if w.port == old.pg_port]
    assert not late, f"{writer.name}: {len(late)} writes reached the demoted {old.name} after it stopped being primary"


def _first_write_on(writer: Writer, node: Node, after: float) -> float:
    wait_until(lambda: any(w.port == node.pg_port for w in writer.since(after)), 60,
               f"{writer.name} writes to reach {node.name}")
    return next(w.at for w in writer.since(after) if w.port == node.pg_port)


# -- tests ----------------------------------------------------------------------------------------------


def test_haproxy_config_lists_every_member_with_its_health_checks(routed: tuple[LocalCluster, Routers]) -> None:
    cluster, routers = routed
    text = (routers.workdir / "haproxy.cfg").read_text()
    for node in cluster.nodes:
        assert f"server {node.name} 127.0.0.1:{node.pg_port}" in text
        assert f"port {node.api_port}" in text
    assert "option httpchk GET /primary" in text and "option httpchk GET /replica?lag=1MB" in text
    assert "on-marked-down shutdown-sessions" in text


def test_the_sidecar_publishes_its_routing_in_the_dcs(routed: tuple[LocalCluster, Routers]) -> None:
    cluster, _ = routed
    leader = cluster.wait_healthy(60)
    key = f"/service/{cluster.scope}/routers/it-router"

    def published() -> dict[str, object] | None:
        out = subprocess.run(["etcdctl", f"--endpoints=127.0.0.1:{cluster.etcd_ports[0]}", "get", key,
                              "--print-value-only"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "ETCDCTL_API": "3"}).stdout.strip()
        return json.loads(out) if out else None

    wait_until(lambda: (published() or {}).get("primary") == leader.name, 10, "routers/it-router")
    assert published() == {"kinds": ["haproxy", "pgbouncer"], "primary": leader.name, "held_for": None}


def test_host_loss_moves_both_paths_to_the_new_primary(routed: tuple[LocalCluster, Routers],
                                                       logs_on_failure: None) -> None:
    cluster, routers = routed
    old = cluster.wait_healthy(60)
    with PromotionClock(cluster) as clock, Writer("haproxy", routers.haproxy_dsn()) as via_haproxy, \
            Writer("pgbouncer", routers.pgbouncer_dsn()) as via_pgbouncer:
        time.sleep(1)
        killed = time.monotonic()
        cluster.kill_host(old)
        dead = time.monotonic()  # kill_host returns once the postmaster is gone
        wait_until(lambda: any(n.name in clock.writable_at for n in cluster.nodes if n is not old), 60,
                   "a promotion")
        new = next(n for n in cluster.nodes if n is not old and n.name in clock.writable_at)
        promoted = clock.writable_at[new.name]
        haproxy_at = _first_write_on(via_haproxy, new, killed)
        pgbouncer_at = _first_write_on(via_pgbouncer, new, killed)
        time.sleep(1)
    for writer in (via_haproxy, via_pgbouncer):
        _no_write_on_demoted(writer, old, dead)
        assert all(w.port == new.pg_port for w in writer.since(max(haproxy_at, pgbouncer_at)) if w.port)
    print(f"\nhost loss of {old.name}: {new.name} promoted {promoted - killed:.1f}s after the kill; "
          f"first write through HAProxy {1000 * (haproxy_at - promoted):.0f} ms after the promotion, "
          f"through PgBouncer {1000 * (pgbouncer_at - promoted):.0f} ms")
    assert haproxy_at - promoted < 2.0, "HAProxy must follow the promotion well before its health checks would"
    cluster.start_agent(old)
    cluster.wait_healthy(120)


def test_switchover_through_pgbouncer_fails_no_transaction_and_haproxy_follows(
        routed: tuple[LocalCluster, Routers], logs_on_failure: None) -> None:
    cluster, routers = routed
    pauses, blackouts, failed = [], [], []
    failures: list[tuple[int, float, str | None]] = []  # (switchover, seconds after the request, error)
    for attempt in range(SWITCHOVERS):
        old = cluster.wait_healthy(120)
        candidate = next(n for n in cluster.nodes if n is not old)
        with Writer("haproxy", routers.haproxy_dsn()) as via_haproxy, \
                Writer("pgbouncer", routers.pgbouncer_dsn()) as via_pgbouncer:
            time.sleep(1)
            started = time.monotonic()
            status, text = _post(old, "/switchover", {"leader": old.name, "candidate": candidate.name})
            assert status == 200, f"switchover answered {status}: {text}"
            pgbouncer_at = _first_write_on(via_pgbouncer, candidate, started)
            haproxy_at = _first_write_on(via_haproxy, candidate, started)
            time.sleep(1)
        window = via_pgbouncer.since(started - 0.5)
        failed.append(sum(1 for w in window if w.port is None))
        failures += [(attempt + 1, round(w.at - started, 2), w.error) for w in window if w.port is None]
        pauses.append(_longest_gap(window))
        blackouts.append(_longest_gap([w for w in via_haproxy.since(started - 0.5) if w.port is not None]))
        for writer in (via_haproxy, via_pgbouncer):
            landed_on_old = [w for w in writer.since(min(pgbouncer_at, haproxy_at)) if w.port == old.pg_port]
            assert not landed_on_old, f"{writer.name}: writes reached the demoted {old.name}"
        errors = {w.error for w in via_pgbouncer.since(started) if w.port is None}
        print(f"\nswitchover {attempt + 1} {old.name} -> {candidate.name}: PgBouncer {failed[-1]} failed "
              f"transactions, longest write pause {pauses[-1]:.2f}s {sorted(errors)}; "
              f"HAProxy writes impossible for {blackouts[-1]:.2f}s")
    print(f"switchover medians over {SWITCHOVERS}: PgBouncer failed {statistics.median(failed)}, "
          f"pause {statistics.median(pauses):.2f}s; HAProxy writes impossible {statistics.median(blackouts):.2f}s")
    assert max(failed) == 0, f"failed transactions through PgBouncer: {failed}: {failures}"


def _longest_gap(writes: list[Write]) -> float:
    """The longest time between two consecutive successful writes."""
    times = [w.at for w in writes if w.port is not None]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
