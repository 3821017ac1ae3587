"""The PostgreSQL adapter against real PostgreSQL 15 servers, run as the postgres user.

One scenario walks a two-node cluster through its life: bootstrap, clone, promote, rewind, re-follow.
Smaller tests cover the refusals and the probe of directories without a server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgwarden.localcluster.postgres import pg_available
from pgwarden.model import DataDirState, LocalPg
from pgwarden.postgres import PgSettings
from pgwarden.postgres.settings import DEFAULT_BIN_DIR
from tests.support.pg import PgSandbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL 15 and the postgres user"),
]


@pytest.fixture
def sandbox() -> Iterator[PgSandbox]:
    box = PgSandbox()
    try:
        yield box
    finally:
        box.cleanup()


def _streaming_from(member: str, timeline: int) -> Callable[[LocalPg], bool]:
    def check(pg: LocalPg) -> bool:
        return pg.is_replica and pg.streaming and pg.following == member and pg.timeline == timeline

    return check


def _bootstrap_primary(box: PgSandbox, settings: PgSettings) -> None:
    initdb_options = ["no-sync", {"locale": "C"}]  # bootstrap.initdb as written in YAML
    for op, args in (("initdb", {"options": initdb_options}), ("write_config", {"role": "primary"}), ("start", {}),
                     ("create_roles", {})):
        result = box.run(settings, op, **args)
        assert result.ok, f"{op}: {result.message}"


def test_two_node_lifecycle(sandbox: PgSandbox) -> None:
    a, b = sandbox.settings("node-a"), sandbox.settings("node-b")

    # Bootstrap: a primary on timeline 1 that accepts our superuser through the pgpass file.
    _bootstrap_primary(sandbox, a)
    post = sandbox.run(a, "run_post_bootstrap",
                       script=f"{DEFAULT_BIN_DIR}/psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE bootstrapped()'")
    assert post.ok, post.message
    assert sandbox.sql(a, "SELECT to_regclass('bootstrapped') IS NOT NULL, current_setting('server_encoding'),"
                          " rolreplication FROM pg_roles WHERE rolname = 'replicator'") == [[True, "UTF8", True]]
    pg_a = sandbox.probe(a)
    assert pg_a.is_primary and pg_a.timeline == 1 and pg_a.running and pg_a.server_version
    assert pg_a.sysid and pg_a.cluster_state == "in production" and not pg_a.standby_signal
    assert pg_a.following is None and pg_a.wal_lsn
    assert sandbox.run(a, "ensure_slots", names=[b.slot_name]).ok
    assert sandbox.probe(a).slots == ("node_b",)

    # Clone: b streams from a through its slot and reports whom it follows.
    cloned = sandbox.run(b, "basebackup", from_host="127.0.0.1", from_port=a.port, source_member="node-a")
    assert cloned.ok, cloned.message
    assert sandbox.run(b, "start").ok
    pg_b = sandbox.wait_for(b, _streaming_from("node-a", 1), what="streaming from node-a")
    assert pg_b.standby_signal and pg_b.sysid == pg_a.sysid
    assert pg_b.wal_receiver and pg_b.wal_receiver.slot_name == "node_b"
    assert pg_b.wal_receiver.sender_port == a.port
    rows = sandbox.probe(a).replication
    assert [(r.application_name, r.usename) for r in rows] == [("node-b", "replicator")]

    # Promote b: timeline 2 right away (from the WAL file name, before pg_control catches up).
    assert sandbox.run(b, "promote").ok
    pg_b = sandbox.probe(b)
    assert pg_b.is_primary and pg_b.timeline == 2
    assert sandbox.run(b, "write_config", role="primary").ok
    assert sandbox.run(b, "checkpoint").ok  # pg_rewind reads the new timeline from b's control file

    # a diverges (a write b never sees), then dies: the probe still reports controldata facts.
    sandbox.sql(a, "CREATE TABLE diverged AS SELECT 1 AS x")
    assert sandbox.run(a, "stop", mode="immediate").ok
    crashed = sandbox.probe(a)
    assert not crashed.running and not crashed.accepting and crashed.postmaster_pid is None
    assert crashed.data_dir is DataDirState.VALID and crashed.cluster_state == "in production"
    assert crashed.sysid == pg_a.sysid and crashed.controldata_timeline == 1 and crashed.checkpoint_lsn

    # Rewind a from b (pg_rewind recovers the unclean shutdown first); a follows b on timeline 2.
    assert sandbox.run(b, "ensure_slots", names=[a.slot_name]).ok
    rewound = sandbox.run(a, "rewind", from_host="127.0.0.1", from_port=b.port, source_member="node-b")
    assert rewound.ok, rewound.message
    conf = (a.data_dir / "postgresql.conf").read_text()
    assert f"port = {a.port}" in conf and "primary_slot_name = 'node_a'" in conf  # a's own config survived
    assert sandbox.run(a, "start").ok
    pg_a = sandbox.wait_for(a, _streaming_from("node-b", 2), what="streaming from node-b")
    assert pg_a.wal_receiver and pg_a.wal_receiver.slot_name == "node_a"
    assert sandbox.sql(a, "SELECT to_regclass('diverged') IS NULL") == [[True]]

    # Re-pointing a running standby is a reload; dropping a managed slot leaves the others.
    assert sandbox.run(a, "set_follow", member="node-b", host="127.0.0.1", port=b.port).ok
    assert sandbox.run(b, "ensure_slots", names=["spare"]).ok
    assert sandbox.run(b, "drop_slots", names=["spare", "absent"]).ok
    assert sandbox.probe(b).slots == ("node_a",)

    # A standby's copy of a permanent slot: reserved at once, advanced forwards only, never past replay.
    assert sandbox.run(a, "ensure_slots", names=["copy"]).ok
    created = dict(sandbox.probe(a).slot_lsns)["copy"]
    assert created is not None
    assert sandbox.run(a, "advance_slots", targets=[["copy", 2**40]]).ok
    standby = sandbox.probe(a)
    advanced = dict(standby.slot_lsns)["copy"]
    assert advanced is not None and standby.replay_lsn is not None and created <= advanced <= standby.replay_lsn
    assert sandbox.run(a, "advance_slots", targets=[["copy", created - 1]]).ok  # backwards: left as it is
    assert dict(sandbox.probe(a).slot_lsns)["copy"] == advanced
    assert sandbox.run(b, "advance_slots", targets=[["node_a", 2**40]]).message == "slots up to date"  # a primary
    assert sandbox.run(a, "drop_slots", names=["copy"]).ok

    # A clean stop of the standby: controldata says so, and the probe still knows whom it follows.
    assert sandbox.run(a, "stop").ok
    stopped = sandbox.probe(a)
    assert not stopped.running and stopped.cluster_state == "shut down in recovery"
    assert stopped.controldata_timeline == 2 and stopped.standby_signal and stopped.following == "node-b"


def test_basebackup_refuses_a_non_empty_directory(sandbox: PgSandbox) -> None:
    settings = sandbox.settings("occupied")
    keep = settings.data_dir / "precious.txt"
    _make_dir_as_postgres(sandbox, settings.data_dir, keep)
    refused = sandbox.run(settings, "basebackup", from_host="127.0.0.1", from_port=1)
    assert not refused.ok and "refusing" in refused.message
    assert keep.read_text() == "keep me"


def test_probe_of_directories_without_a_server(sandbox: PgSandbox) -> None:
    missing = sandbox.settings("missing")
    assert sandbox.probe(missing) == LocalPg(data_dir=DataDirState.MISSING)
    empty = sandbox.settings("empty")
    _make_dir_as_postgres(sandbox, empty.data_dir)
    assert sandbox.probe(empty).data_dir is DataDirState.EMPTY
    junk = sandbox.settings("junk")
    _make_dir_as_postgres(sandbox, junk.data_dir, junk.data_dir / "PG_VERSION")
    assert sandbox.probe(junk).data_dir is DataDirState.INVALID
    if os.geteuid() == 0:  # a directory postgres may not enter
        private = sandbox.root / "root-only"
        private.mkdir(mode=0o700)
        locked = sandbox.settings("locked", data_dir=private / "data")
        assert sandbox.probe(locked).data_dir is DataDirState.INACCESSIBLE


def test_move_data_dir_aside(sandbox: PgSandbox) -> None:
    settings = sandbox.settings("broken")
    _make_dir_as_postgres(sandbox, settings.data_dir, settings.data_dir / "PG_VERSION")
    moved = sandbox.run(settings, "move_data_dir_aside")
    assert moved.ok, moved.message
    assert settings.data_dir.is_dir() and not list(settings.data_dir.iterdir())  # emptied, never renamed
    copies = list(sandbox.root.glob("broken.failed.*"))
    assert [p.name.split(".failed.")[0] for p in copies] == ["broken"]
    assert (copies[0] / "PG_VERSION").read_text() == "keep me"
    # Again (a second failure): still one copy, the first one.
    (settings.data_dir / "PG_VERSION").write_text("later")
    again = sandbox.run(settings, "move_data_dir_aside")
    assert again.ok, again.message
    assert list(sandbox.root.glob("broken.failed.*")) == copies


def _make_dir_as_postgres(box: PgSandbox, directory: Path, file: Path | None = None) -> None:
    """A directory (and a file in it) owned like the sandbox, that is by the postgres user."""
    directory.mkdir(mode=0o700)
    if file is not None:
        file.write_text("keep me")
    owner = box.root.stat()
    for path in (directory, file):
        if path is not None:
            os.chown(path, owner.st_uid, owner.st_gid)
