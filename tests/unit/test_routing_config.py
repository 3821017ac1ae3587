"""`pgwarden haproxy-config` output and the PgBouncer databases file (pure renderers)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pgwarden.model import ClusterView, Member
from pgwarden.routing.haproxy_config import HaproxyOptions, render_haproxy_config
from pgwarden.routing.pgbouncer import databases_section
from pgwarden.routing.topology import ServerAddress, servers_from_view

SERVERS = (ServerAddress("node1", "10.0.0.1", 5432, "10.0.0.1", 8008),
           ServerAddress("node2", "10.0.0.2", 5433, "10.0.1.2", 8009, api_tls=True))


def test_members_become_servers_sorted_and_incomplete_ones_are_skipped() -> None:
    view = ClusterView(scope="s", members=(
        Member("b", conn_url="postgres://10.0.0.2:5433/postgres", api_url="http://10.0.1.2:8009/patroni"),
        Member("a", conn_url="postgres://10.0.0.1:5432/postgres", api_url="https://10.0.0.1:8008/patroni"),
        Member("c", conn_url="", api_url="http://10.0.0.3:8008/patroni"),
    ))
    assert servers_from_view(view) == (ServerAddress("a", "10.0.0.1", 5432, "10.0.0.1", 8008, True),
                                       ServerAddress("b", "10.0.0.2", 5433, "10.0.1.2", 8009, False))


def test_haproxy_config_has_both_listeners_checks_and_the_admin_socket() -> None:
    text = render_haproxy_config("demo", SERVERS, HaproxyOptions(replica_lag="16MB"))
    assert "stats socket /run/haproxy/pgwarden.sock mode 600 level admin" in text
    assert "listen primary\n    bind *:5000" in text and "listen replicas\n    bind *:5001" in text
    assert "option httpchk GET /primary\n" in text and "option httpchk GET /replica?lag=16MB\n" in text
    assert text.count("on-marked-down shutdown-sessions") == 2
    assert "server node1 10.0.0.1:5432 maxconn 100 check addr 10.0.0.1 port 8008\n" in text
    assert "server node2 10.0.0.2:5433 maxconn 100 check addr 10.0.1.2 port 8009 check-ssl verify none" in text
    assert "listen stats\n    mode http\n    bind *:7000" in text


def test_no_lag_limit_checks_plain_replica() -> None:
    text = render_haproxy_config("demo", SERVERS, HaproxyOptions(replica_lag=None))
    assert "option httpchk GET /replica\n" in text


def test_member_names_haproxy_cannot_use_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid HAProxy server name"):
        render_haproxy_config("demo", (ServerAddress("bad name", "h", 1, "h", 2),), HaproxyOptions())


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    options = HaproxyOptions(admin_socket=str(tmp_path / "admin.sock"))
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_haproxy_config("demo", SERVERS, options))
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr


def test_databases_file_points_every_entry_at_the_server() -> None:
    text = databases_section(SERVERS[1], ["*", "app"], "pool_size=20")
    assert "* = host=10.0.0.2 port=5433 pool_size=20\n" in text
    assert "app = host=10.0.0.2 port=5433 pool_size=20\n" in text
