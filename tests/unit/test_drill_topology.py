"""The drill's discovery helpers: DSN, REST base URL, health verdicts, local process lookup."""

from __future__ import annotations

import os
import socket

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgwarden.drill.faults import find_local_targets, is_local_address, listening_pids
from pgwarden.drill.topology import (
    DrillError,
    Health,
    MemberInfo,
    MemberStatus,
    multi_host_dsn,
    with_client_timeouts,
)
from pgwarden.rest_client import endpoint_url

MEMBERS = (
    MemberInfo("a", "postgres://10.0.0.1:5432/postgres", "http://10.0.0.1:8008/patroni"),
    MemberInfo("b", "postgres://10.0.0.2:5433/postgres", "http://10.0.0.2:8009/patroni"),
)


def test_multi_host_dsn_lists_every_member_and_wants_the_writer() -> None:
    params = conninfo_to_dict(multi_host_dsn(MEMBERS, user="postgres", password="s3 cr'et"))
    assert params["host"] == "10.0.0.1,10.0.0.2"
    assert params["port"] == "5432,5433"
    assert params["target_session_attrs"] == "read-write"
    assert params["password"] == "s3 cr'et"
    assert params["connect_timeout"] == "2"


def test_multi_host_dsn_needs_a_conn_url() -> None:
    with pytest.raises(DrillError, match="conn_url"):
        multi_host_dsn([MemberInfo("a", "", "")], user="postgres", password=None)


def test_a_user_dsn_keeps_its_own_timeouts() -> None:
    params = conninfo_to_dict(with_client_timeouts("host=x connect_timeout=9"))
    assert params["connect_timeout"] == "9"
    assert params["tcp_user_timeout"] == "5000"


def test_rest_calls_go_to_the_api_root_not_to_the_published_patroni_path() -> None:
    assert endpoint_url(MEMBERS[0].api_url, "/primary") == "http://10.0.0.1:8008/primary"
    assert MEMBERS[1].pg_address == ("10.0.0.2", 5433)


def _status(name: str, role: str, replication: str | None = "streaming", state: str = "running") -> MemberStatus:
    return MemberStatus(name, True, role=role, state=state, replication_state=replication)


def test_healed_means_one_primary_and_every_other_member_streaming() -> None:
    assert Health((_status("a", "primary", None), _status("b", "replica"))).healed
    assert not Health((_status("a", "primary", None), _status("b", "replica", replication=None))).healed
    assert not Health((_status("a", "primary", None), MemberStatus("b", reachable=False))).healed
    assert not Health((_status("a", "primary", None), _status("b", "primary", None))).healed
    assert "b: no answer" in Health((MemberStatus("b", reachable=False),)).describe()


def test_loopback_is_local_and_a_foreign_address_is_not() -> None:
    assert is_local_address("127.0.0.1")
    assert is_local_address("localhost")
    assert not is_local_address("192.0.2.1")  # TEST-NET-1: never assigned to a host


def test_listening_pids_finds_our_own_listener() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert listening_pids(port) == {os.getpid()}


def test_kills_are_refused_for_remote_members() -> None:
    with pytest.raises(DrillError, match="not on this machine"):
        find_local_targets(MemberInfo("far", "postgres://192.0.2.1:5432/postgres", ""), need_agent=True)


def test_a_listener_that_is_not_a_postmaster_is_never_killed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        member = MemberInfo("me", f"postgres://127.0.0.1:{port}/postgres", "")
        with pytest.raises(DrillError, match="cannot find me's postmaster"):
            find_local_targets(member, need_agent=False)
