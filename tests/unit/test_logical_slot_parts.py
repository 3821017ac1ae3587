"""Permanent logical slots in the adapters and the agent's pure parts: the slot state file write (a tmp
directory, no server), WAL segment arithmetic, the probe's slot rows, the forced hot_standby_feedback, the
member JSON field and its codec, `list`'s footer and the metrics."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from pgwarden.agent.member import member_json
from pgwarden.agent.pgsettings import pg_settings
from pgwarden.cli.listing import logical_ready_text
from pgwarden.config.layering import layer
from pgwarden.config.schema import LocalConfig
from pgwarden.config.validation import parse_dynamic, validate_model
from pgwarden.dcs import codec
from pgwarden.model import ClusterView, DataDirState, LocalPg, LogicalSlot, Member, Tags, lsn_from_text
from pgwarden.postgres.controller import write_slot_states
from pgwarden.postgres.probe import apply_probe_row
from pgwarden.postgres.walfiles import segment_number
from tests.unit.test_pgconf import BASE, probe_row

LOGICAL = {"slots": {"cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}},
           "postgresql": {"parameters": {"wal_level": "logical"}}}


# -- the state file write ----------------------------------------------------------------------------------


def test_state_files_are_written_whole_with_private_modes(tmp_path: Path) -> None:
    replslot = tmp_path / "pg_replslot"
    replslot.mkdir(mode=0o700)
    result = write_slot_states(replslot, [("cdc", b"\x01" * 200), ("two", b"\x02" * 180)])
    assert result.ok, result.message
    for name, size in (("cdc", 200), ("two", 180)):
        slot_dir = replslot / name
        assert stat.S_IMODE(slot_dir.stat().st_mode) == 0o700
        state = slot_dir / "state"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600 and state.stat().st_size == size
        assert sorted(p.name for p in slot_dir.iterdir()) == ["state"]  # no temporary file left


def test_a_leftover_directory_is_overwritten(tmp_path: Path) -> None:
    replslot = tmp_path / "pg_replslot"
    (replslot / "cdc").mkdir(parents=True, mode=0o755)
    (replslot / "cdc" / "state.tmp").write_bytes(b"partial")
    assert write_slot_states(replslot, [("cdc", b"\x03" * 64)]).ok
    assert (replslot / "cdc" / "state").read_bytes() == b"\x03" * 64
    assert stat.S_IMODE((replslot / "cdc").stat().st_mode) == 0o700
    assert not (replslot / "cdc" / "state.tmp").exists()


def test_a_hostile_slot_name_writes_nothing(tmp_path: Path) -> None:
    replslot = tmp_path / "pg_replslot"
    replslot.mkdir()
    for bad in ("../escape", "a/b", "", "X"):
        assert not write_slot_states(replslot, [(bad, b"x" * 64)]).ok
    assert list(replslot.iterdir()) == [] and not (tmp_path / "escape").exists()


def test_a_missing_pg_replslot_fails_cleanly(tmp_path: Path) -> None:
    result = write_slot_states(tmp_path / "missing", [("cdc", b"x" * 64)])
    assert not result.ok and "writing slot state files failed" in result.message


def test_wal_segment_start() -> None:
    mb16 = 16 * 1024 * 1024
    assert segment_number("000000010000000000000003", mb16) * mb16 == lsn_from_text("0/3000000")
    assert segment_number("0000000200000001000000FF", mb16) * mb16 == lsn_from_text("1/FF000000")
    assert segment_number("000000010000000000000003", 64 * 1024 * 1024) * 64 * 1024 * 1024 == lsn_from_text("0/C000000")


# -- the probe ---------------------------------------------------------------------------------------------


def test_the_probe_lists_logical_slots_apart_from_the_physical_ones() -> None:
    rows = [["barman", "0/2000000", "physical", None, None, None, None],
            ["cdc", "0/3000000", "logical", "app", "pgoutput", "0/3000100", "745"],
            ["n2", "0/3000000"]]
    pg = apply_probe_row(BASE, probe_row(slots=rows, wal_level="logical"))
    assert pg.slots == ("barman", "n2")
    assert pg.logical_slots == (LogicalSlot("cdc", "app", "pgoutput", lsn_from_text("0/3000100"),
                                            lsn_from_text("0/3000000"), 745),)
    assert pg.wal_level == "logical"


def test_hostile_logical_rows_do_not_break_the_probe() -> None:
    rows = [["cdc", None, "logical", None, None, None, None], ["x", "garbage", "logical", 1, 2, "zz", "-1"], 7]
    pg = apply_probe_row(BASE, probe_row(slots=rows))
    assert [s.name for s in pg.logical_slots] == ["cdc", "x"]
    assert all(s.confirmed_flush is None and s.catalog_xmin is None for s in pg.logical_slots)


# -- hot_standby_feedback ----------------------------------------------------------------------------------


def _local(tags: dict[str, Any] | None = None) -> LocalConfig:
    return validate_model(LocalConfig, {
        "scope": "demo", "name": "n1", "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
        "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/tmp/n1",
                       "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "r"}},
                       "parameters": {"hot_standby_feedback": "off"}},
        **({"tags": tags} if tags else {})})


def test_hot_standby_feedback_is_forced_on_while_logical_slots_are_configured() -> None:
    config = layer(_local(), *parse_dynamic(LOGICAL))
    assert pg_settings(config, "replica").parameters["hot_standby_feedback"] == "on"
    assert pg_settings(config, "primary").parameters["hot_standby_feedback"] == "on"


def test_hot_standby_feedback_is_the_users_without_logical_slots_or_on_a_nofailover_member() -> None:
    assert pg_settings(layer(_local(), *parse_dynamic({})), "replica").parameters["hot_standby_feedback"] == "off"
    nofailover = layer(_local({"nofailover": True}), *parse_dynamic(LOGICAL))
    assert pg_settings(nofailover, "replica").parameters["hot_standby_feedback"] == "off"


# -- the member JSON, list, metrics -------------------------------------------------------------------------

REPLICA = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=True, replay_lsn=100,
                  receive_lsn=100, timeline=1, sysid="7")


def _member_json(**extra: Any) -> dict[str, Any]:
    return member_json(pg=REPLICA, conn_url="postgres://h:5432/postgres", api_url="http://h:8008/patroni",
                       tags=Tags(), task=None, **extra)


def test_the_member_json_field_is_there_only_with_logical_slots() -> None:
    assert "logical_slots_ready" not in _member_json()
    assert _member_json(logical_slots_ready=False)["logical_slots_ready"] is False
    assert _member_json(logical_slots_ready=True)["logical_slots_ready"] is True


def test_the_codec_reads_the_field_and_survives_garbage() -> None:
    text = json.dumps(_member_json(logical_slots_ready=True))
    member = codec.member_from_json("n2", text)
    assert member.logical_slots_ready is True
    assert json.loads(codec.member_to_json(member))["logical_slots_ready"] is True
    assert codec.member_from_json("n2", json.dumps({"logical_slots_ready": {"a": 1}})).logical_slots_ready is None
    assert "logical_slots_ready" not in json.loads(codec.member_to_json(codec.member_from_json("n2", "{}")))


def test_list_shows_whose_copies_are_ready() -> None:
    members = (Member("n1", logical_slots_ready=True), Member("n3", logical_slots_ready=False), Member("n2"))
    assert logical_ready_text(ClusterView(scope="s", members=members)) == "n1 yes, n3 no"
    assert logical_ready_text(ClusterView(scope="s", members=(Member("n1"),))) == ""


def test_a_copy_takes_the_leaders_decoding_snapshot_at_the_slots_restart_lsn(tmp_path: Path) -> None:
    """The state file's restart_lsn (PostgreSQL 11-16 layout) names the snapshot PostgreSQL serialized there;
    it is written into pg_logical/snapshots before the slot, and a hostile name is refused."""
    import sys

    from pgwarden.postgres.controller import snapshot_file, state_restart_lsn, write_snapshots

    state = bytearray(200)
    state[96:104] = (0x1_0A2B3C48).to_bytes(8, sys.byteorder)
    assert state_restart_lsn(bytes(state)) == 0x1_0A2B3C48
    assert snapshot_file(0x1_0A2B3C48) == "1-A2B3C48.snap"
    assert snapshot_file(0x3000028) == "0-3000028.snap"
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    assert write_snapshots(snapshots, [("1-A2B3C48.snap", b"x" * 70000)]).ok
    written = snapshots / "1-A2B3C48.snap"
    assert written.read_bytes() == b"x" * 70000 and (written.stat().st_mode & 0o777) == 0o600
    assert not list(snapshots.glob("*.tmp"))
    refused = write_snapshots(snapshots, [("../../global/pg_control", b"")])
    assert not refused.ok and "invalid decoding snapshot name" in refused.message
