"""`postgresql.authentication.*` libpq options on real PostgreSQL 15 servers that accept only TLS with
client certificates (no plain `host` rule, no `local` rule at all).

A test CA, a server certificate and one client certificate per role are made with `openssl`; the
replication and rewind keys are encrypted, so their `sslpassword` must reach libpq. The scenario is
the adapter's real life cycle: bootstrap (pgwarden's own sessions as the superuser), pg_basebackup and
streaming (the replication role, primary_conninfo), pg_rewind (the rewind role), re-follow. A second
test clones and streams through the unix socket with `use_unix_socket_repl`.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_USER, pg_available
from pgwarden.model import LocalPg
from pgwarden.postgres import Credentials, PgSettings
from tests.support.pg import PgSandbox, WorkerError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL 15 and the postgres user"),
]

OPENSSL = "/usr/bin/openssl"
KEY_PASSPHRASES = {"replicator": "repl key pass", "rewinder": "rewind-key-pass", "rewind_user": "rw pass"}
HBA_CERTS_ONLY = (
    "hostssl all          all 127.0.0.1/32 scram-sha-256 clientcert=verify-full",
    "hostssl replication  all 127.0.0.1/32 cert",
)


@pytest.fixture
def sandbox() -> Iterator[PgSandbox]:
    box = PgSandbox()
    try:
        yield box
    finally:
        box.cleanup()


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_pki(root: Path, users: tuple[str, ...] = ("postgres", "replicator", "rewinder")) -> Path:
    """ca.crt, server.{crt,key} (for 127.0.0.1), <user>.{crt,key} per user, an empty CRL (root.crl and a
    hashed crl.d/), all owned by postgres with private keys 0600."""
    tls = root / "tls"
    tls.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    _openssl(tls, "req", "-x509", "-new", "-nodes", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=pgwarden test CA")
    (tls / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(tls, "req", "-new", "-nodes", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    _openssl(tls, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    for user in users:
        _openssl(tls, "req", "-new", "-nodes", *ec, "-keyout", f"{user}.plain.key", "-out", f"{user}.csr",
                 "-subj", f"/CN={user}")
        _openssl(tls, "x509", "-req", "-in", f"{user}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{user}.crt", "-days", "2")
        if user in KEY_PASSPHRASES:  # an encrypted key: only sslpassword opens it
            _openssl(tls, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", f"{user}.plain.key", "-out", f"{user}.key",
                     "-passout", f"pass:{KEY_PASSPHRASES[user]}")
            (tls / f"{user}.plain.key").unlink()
        else:
            (tls / f"{user}.plain.key").rename(tls / f"{user}.key")
    (tls / "index.txt").write_text("")
    (tls / "crlnumber").write_text("01\n")
    (tls / "ca.cnf").write_text("[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\n"
                                "default_md = sha256\ndefault_crl_days = 2\n")
    _openssl(tls, "ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-out", "root.crl")
    crl_hash = subprocess.run([OPENSSL, "crl", "-hash", "-noout", "-in", "root.crl"], cwd=tls, check=True,
                              capture_output=True, text=True, timeout=30).stdout.strip()
    (tls / "crl.d").mkdir()
    (tls / "crl.d" / f"{crl_hash}.r0").write_bytes((tls / "root.crl").read_bytes())
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        for path in (tls, *tls.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    for key in tls.glob("*.key"):
        key.chmod(0o600)
    return tls


def _tls_settings(box: PgSandbox, tls: Path, name: str, **overrides: Any) -> PgSettings:
    verify = {"sslmode": "verify-full", "sslrootcert": str(tls / "ca.crt"), "gssencmode": "disable"}
    base = box.settings(name)
    parameters = {**base.parameters, "ssl": True, "ssl_cert_file": str(tls / "server.crt"),
                  "ssl_key_file": str(tls / "server.key"), "ssl_ca_file": str(tls / "ca.crt"),
                  "log_connections": True}
    values: dict[str, Any] = {
        "superuser": Credentials("postgres", "super-pw", sslcert=str(tls / "postgres.crt"),
                                 sslkey=str(tls / "postgres.key"), channel_binding="require",
                                 sslnegotiation="postgres", **verify),  # a libpq 15 leaves it out
        "replication": Credentials("replicator", "repl-pw", sslcert=str(tls / "replicator.crt"),
                                   sslkey=str(tls / "replicator.key"), sslpassword=KEY_PASSPHRASES["replicator"],
                                   sslcrl=str(tls / "root.crl"), **verify),
        "rewind": Credentials("rewinder", "rewind-pw", sslcert=str(tls / "rewinder.crt"),
                              sslkey=str(tls / "rewinder.key"), sslpassword=KEY_PASSPHRASES["rewinder"],
                              sslcrldir=str(tls / "crl.d"), **verify),
        "parameters": parameters,
        "pg_hba": HBA_CERTS_ONLY,
    }
    values.update(overrides)
    return dataclasses.replace(base, **values)


def _ok(box: PgSandbox, settings: PgSettings, op: str, **args: Any) -> None:
    result = box.run(settings, op, **args)
    assert result.ok, f"{settings.name} {op}: {result.message}"


def _streaming_from(member: str, timeline: int) -> Callable[[LocalPg], bool]:
    def check(pg: LocalPg) -> bool:
        return pg.is_replica and pg.streaming and pg.following == member and pg.timeline == timeline

    return check


def _bootstrap(box: PgSandbox, settings: PgSettings) -> None:
    _ok(box, settings, "initdb", options=["no-sync", {"locale": "C"}])
    _ok(box, settings, "write_config", role="primary")
    _ok(box, settings, "start")
    _ok(box, settings, "create_roles")  # pgwarden's own session: TLS, client certificate, SCRAM


def _replication_ssl(box: PgSandbox, primary: PgSettings) -> list[list[Any]]:
    return box.sql(primary, "SELECT r.application_name, r.usename::text, s.ssl, s.client_dn"
                            "  FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)")


def test_certificates_only_cluster_bootstraps_clones_streams_and_rewinds(sandbox: PgSandbox) -> None:
    tls = _make_pki(sandbox.root)
    a, b = _tls_settings(sandbox, tls, "node-a"), _tls_settings(sandbox, tls, "node-b")

    # Bootstrap and probe: pgwarden's sessions use the superuser's certificate (and channel binding).
    _bootstrap(sandbox, a)
    assert sandbox.probe(a).is_primary
    assert sandbox.sql(a, "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [
        [True, "/CN=postgres"]]
    # No fallback: the same session without the certificate is refused by pg_hba.
    with pytest.raises(WorkerError, match="certificate"):
        sandbox.sql(dataclasses.replace(a, superuser=Credentials("postgres", "super-pw")), "SELECT 1")

    # Clone with pg_basebackup and stream: the replication role's encrypted key opens with its sslpassword.
    _ok(sandbox, a, "ensure_slots", names=[b.slot_name])
    _ok(sandbox, b, "basebackup", from_host="127.0.0.1", from_port=a.port, source_member="node-a")
    service = b.pgpass_path.with_name(b.pgpass_path.name + ".service")
    assert service.stat().st_mode & 0o777 == 0o600
    _ok(sandbox, b, "start")
    sandbox.wait_for(b, _streaming_from("node-a", 1), what="streaming from node-a over TLS")
    assert _replication_ssl(sandbox, a) == [["node-b", "replicator", True, "/CN=replicator"]]
    conf = (b.data_dir / "postgresql.conf").read_text()
    assert "sslmode=verify-full" in conf and str(tls / "replicator.crt") in conf and "sslnegotiation" not in conf

    # Promote b; a diverges and crashes; pg_rewind reaches b as the rewind role, then a follows b.
    _ok(sandbox, b, "promote")
    _ok(sandbox, b, "write_config", role="primary")
    _ok(sandbox, b, "checkpoint")
    sandbox.sql(a, "CREATE TABLE diverged AS SELECT 1 AS x")
    _ok(sandbox, a, "stop", mode="immediate")
    _ok(sandbox, b, "ensure_slots", names=[a.slot_name])
    _ok(sandbox, a, "rewind", from_host="127.0.0.1", from_port=b.port, source_member="node-b")
    _ok(sandbox, a, "start")
    sandbox.wait_for(a, _streaming_from("node-b", 2), what="streaming from node-b over TLS")
    assert sandbox.sql(a, "SELECT to_regclass('diverged') IS NULL") == [[True]]
    assert _replication_ssl(sandbox, b) == [["node-a", "replicator", True, "/CN=replicator"]]
    # pg_rewind connected to b as the rewind role, over TLS (log_connections).
    authorized = [line for line in b.postmaster_log.read_text(errors="replace").splitlines()
                  if "connection authorized: user=rewinder" in line]
    assert authorized and all("SSL enabled" in line for line in authorized)


def test_use_unix_socket_repl_clones_and_streams_through_the_socket(sandbox: PgSandbox) -> None:
    """Both servers share the sandbox's socket directory; replication then needs a `local` rule."""
    tls = _make_pki(sandbox.root)
    hba = (*HBA_CERTS_ONLY, "local   replication  replicator   scram-sha-256")
    a = _tls_settings(sandbox, tls, "sock-a", pg_hba=hba)
    b = _tls_settings(sandbox, tls, "sock-b", pg_hba=hba, use_unix_socket_repl=True)
    _bootstrap(sandbox, a)
    _ok(sandbox, a, "ensure_slots", names=[b.slot_name])
    _ok(sandbox, b, "basebackup", from_host="127.0.0.1", from_port=a.port, source_member="sock-a")
    _ok(sandbox, b, "start")
    pg_b = sandbox.wait_for(b, _streaming_from("sock-a", 1), what="streaming from sock-a through the socket")
    assert pg_b.wal_receiver and pg_b.wal_receiver.sender_host == str(sandbox.root)
    # TLS options stay in primary_conninfo; libpq does not use TLS on a unix socket.
    assert sandbox.sql(a, "SELECT r.client_addr IS NULL, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s"
                          " USING (pid)") == [[True, False]]


@pytest.mark.skipif(not Path(ETCD_BIN).exists(), reason="needs etcd")
def test_agents_run_a_cluster_that_accepts_only_certificates() -> None:
    """The same keys in the agents' YAML: bootstrap, probes, clone and streaming of a real 2-node cluster."""
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-ssl-"))
    workdir.chmod(0o755)
    tls = _make_pki(workdir, ("postgres", "replicator", "rewind_user"))
    verify = {"sslmode": "verify-full", "sslrootcert": str(tls / "ca.crt")}

    def role(user: str, **extra: str) -> dict[str, str]:
        return {"sslcert": str(tls / f"{user}.crt"), "sslkey": str(tls / f"{user}.key"), **verify, **extra}

    def extra_config(node: Node) -> dict[str, Any]:
        return {
            "bootstrap": {"pg_hba": list(HBA_CERTS_ONLY)},
            "postgresql": {
                "parameters": {"ssl": "on", "ssl_cert_file": str(tls / "server.crt"),
                               "ssl_key_file": str(tls / "server.key"), "ssl_ca_file": str(tls / "ca.crt")},
                "authentication": {
                    "superuser": role("postgres", channel_binding="require"),
                    "replication": role("replicator", sslpassword=KEY_PASSPHRASES["replicator"]),
                    "rewind": role("rewind_user", sslpassword=KEY_PASSPHRASES["rewind_user"]),
                },
            },
        }

    cluster = LocalCluster(workdir, size=2, pg_base_port=0, api_base_port=0, extra_config=extra_config)
    try:
        cluster.start()
        leader = cluster.wait_healthy(90)
        replica = next(n for n in cluster.nodes if n is not leader)
        # This test runs as another OS user than postgres: libpq wants a key file of its own user.
        client_key = workdir / "client.key"
        shutil.copy(tls / "postgres.key", client_key)
        client_key.chmod(0o600)
        dsn = make_conninfo(cluster.conninfo(leader), sslcert=str(tls / "postgres.crt"), sslkey=str(client_key),
                            **verify)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT r.application_name, r.usename::text, s.ssl, s.client_dn"
                                "  FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)").fetchall()
        assert rows == [(replica.name, "replicator", True, "/CN=replicator")]
        with pytest.raises(psycopg.OperationalError, match="certificate"):  # no fallback without one
            psycopg.connect(cluster.conninfo(leader), autocommit=True).close()
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
