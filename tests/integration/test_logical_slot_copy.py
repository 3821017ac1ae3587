"""The copy of a logical slot into a standby on real PostgreSQL 15 (the adapter only, no agent): the
leader's state file read over the rewind role's connection, written into the stopped standby, the copy
restored by PostgreSQL at start and advanced there with pg_replication_slot_advance; and for a standby
cloned after the slot's position, the WAL it lacks fetched from the leader and kept by its restartpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pgwarden.localcluster.postgres import pg_available
from pgwarden.model import LocalPg, LogicalSlot, lsn_from_text
from pgwarden.postgres import PgSettings
from pgwarden.postgres.slotwal import segment_number
from tests.support.pg import REPO_ROOT, PgSandbox, settings_to_json

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL 15 and the postgres user"),
]

_COPY = """
import asyncio, json, sys
from pgwarden.postgres.controller import PgController
from pgwarden.postgres import slotwal
from tests.support.pg import settings_from_json
request = json.loads(sys.stdin.read())
slotwal.FETCH_CAP = request.get("cap", slotwal.FETCH_CAP)
pg = PgController(settings_from_json(request["settings"]))
async def main():
    read = await pg.read_slot_states("127.0.0.1", request["port"], request["names"])
    if not read.ok:
        return {"ok": False, "message": read.message, "waiting": read.waiting}
    stopped = await pg.stop("fast")
    written = pg.write_slot_states(read.states, read.snapshots, read.segments)
    started = await pg.start()
    return {"ok": stopped.ok and written.ok and started.ok, "message": f"{read.message}; {written.message}",
            "waiting": False, "segments": list(read.segments)}
print(json.dumps(asyncio.run(main())))
"""


_SEGMENT = 4 * 1024 * 1024
"""The second test's WAL segment size (initdb --wal-segsize=4)."""

CONFIRMED = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc'"


@pytest.fixture
def sandbox() -> Iterator[PgSandbox]:
    box = PgSandbox()
    try:
        yield box
    finally:
        box.cleanup()


def _logical(pg: LocalPg) -> list[LogicalSlot]:
    """The probe's logical slots (the sandbox's JSON round trip leaves them as mappings)."""
    return [slot if isinstance(slot, LogicalSlot) else LogicalSlot(**slot) for slot in pg.logical_slots]


def _copy(standby: PgSettings, port: int, names: list[str], **extra: object) -> dict[str, object]:
    request = {"settings": settings_to_json(standby), "port": port, "names": names, **extra}
    argv = ["runuser", "-u", "postgres", "--", sys.executable, "-c", _COPY]
    done = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    reply: dict[str, object] = json.loads(done.stdout)
    return reply


def test_a_logical_slot_is_copied_into_a_standby_and_advanced_there(sandbox: PgSandbox) -> None:
    logical = {"wal_level": "logical", "hot_standby_feedback": "on"}
    a = sandbox.settings("node-a")
    a = sandbox.settings("node-a", parameters={**a.parameters, **logical})
    b = sandbox.settings("node-b", parameters=a.parameters)
    for op, args in (("initdb", {}), ("write_config", {"role": "primary"}), ("start", {}), ("create_roles", {})):
        assert sandbox.run(a, op, **args).ok, op
    assert sandbox.run(a, "ensure_slots", names=[b.slot_name]).ok
    assert sandbox.run(b, "basebackup", from_host="127.0.0.1", from_port=a.port, source_member="node-a").ok
    assert sandbox.run(b, "start").ok
    waiting = _copy(b, a.port, ["cdc"])  # no such slot on the leader yet: the copy waits, nothing is stopped
    assert waiting["ok"] is False and waiting["waiting"] is True and "no slot cdc" in str(waiting["message"])

    created = sandbox.run(a, "create_logical_slots", specs=[["cdc", "postgres", "test_decoding"]])
    assert created.ok, created.message
    again = sandbox.run(a, "create_logical_slots", specs=[["cdc", "postgres", "test_decoding"]])
    assert again.ok and again.message == "logical slots present"
    foreign = sandbox.run(a, "create_logical_slots", specs=[["cdc", "postgres", "pgoutput"]])
    assert not foreign.ok and "not pgwarden's" in foreign.message  # never silently reused
    sandbox.sql(a, "CREATE TABLE t (id int)")
    sandbox.sql(a, "INSERT INTO t SELECT generate_series(1, 10)")
    sandbox.sql(a, "SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")
    sandbox.sql(a, "CHECKPOINT")  # the state file on disk now has the consumer's position
    ((confirmed,),) = sandbox.sql(a, CONFIRMED)
    sandbox.wait_for(b, lambda pg: pg.is_replica and (pg.replay_lsn or 0) >= lsn_from_text(str(confirmed)),
                     what="replayed the slot's position")

    copied = _copy(b, a.port, ["cdc"])
    assert copied["ok"], copied
    pg_b = sandbox.wait_for(b, lambda pg: pg.is_replica and bool(pg.logical_slots), what="the copy restored")
    (copy,) = _logical(pg_b)
    assert (copy.name, copy.database, copy.plugin) == ("cdc", "postgres", "test_decoding")
    assert copy.confirmed_flush == lsn_from_text(str(confirmed)) and copy.catalog_xmin is not None

    sandbox.sql(a, "INSERT INTO t SELECT generate_series(11, 20)")
    sandbox.sql(a, "SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")
    ((moved,),) = sandbox.sql(a, CONFIRMED)
    target = lsn_from_text(str(moved))
    sandbox.wait_for(b, lambda pg: (pg.replay_lsn or 0) >= target, what="replayed the new position")
    advanced = sandbox.run(b, "advance_logical_slots", targets=[["cdc", "postgres", target]])
    assert advanced.ok and "cdc" in advanced.message, advanced.message
    (after,) = _logical(sandbox.probe(b))
    assert after.confirmed_flush == target
    assert sandbox.run(b, "drop_slots", names=["cdc"]).ok  # a copy is dropped on a standby as well
    assert _logical(sandbox.probe(b)) == []



def test_a_standby_cloned_after_the_slot_fetches_the_wal_it_lacks_from_the_leader(sandbox: PgSandbox) -> None:
    """The slot never moves (no consumer) and the primary switches WAL segments before and after the standby
    is cloned: the standby never had the slot's restart_lsn. The copy fetches the missing segments (4 MB
    ones: a non-default size, several chunks each) before the restart; its restartpoints keep them, and the
    copy decodes from restart_lsn through them (pg_replication_slot_advance). Then the standby is promoted
    (timeline 2) and a new standby cloned from it fetches the slot's WAL across the timeline switch: the old
    timeline's files before the switch, the new one's from the segment holding the switch on."""
    a = sandbox.settings("node-a", initdb_options=("--no-sync", "--wal-segsize=4"))
    a = sandbox.settings("node-a", initdb_options=a.initdb_options,
                         parameters={**a.parameters, "wal_level": "logical", "hot_standby_feedback": "on"})
    b = sandbox.settings("node-b", parameters=a.parameters)
    for op, args in (("initdb", {}), ("write_config", {"role": "primary"}), ("start", {}), ("create_roles", {})):
        assert sandbox.run(a, op, **args).ok, op
    assert sandbox.run(a, "create_logical_slots", specs=[["cdc", "postgres", "test_decoding"]]).ok
    ((restart,),) = sandbox.sql(a, "SELECT pg_walfile_name(restart_lsn) FROM pg_replication_slots "
                                   "WHERE slot_name = 'cdc'")
    sandbox.sql(a, "CREATE TABLE t (id int)")
    _switch(sandbox, a, 3)
    _clone(sandbox, a, b)
    _switch(sandbox, a, 2)
    _restartpoint(sandbox, a, b)
    assert str(restart) not in _wal_files(sandbox, b)  # the standby lacks the slot's WAL

    pid = sandbox.probe(b).postmaster_pid
    capped = _copy(b, a.port, ["cdc"], cap=_SEGMENT)  # more than a (lowered) cap: refused, nothing stopped
    assert capped["waiting"] is True and "refused: more than the 4 MiB cap" in str(capped["message"]), capped
    assert "WAL segments (" in str(capped["message"]) and "the slot pins" in str(capped["message"])
    assert sandbox.probe(b).postmaster_pid == pid and not _logical(sandbox.probe(b))

    fetched = _copied(sandbox, b, a.port)
    assert len(fetched) >= 3 and fetched[0] == restart
    sandbox.sql(a, "INSERT INTO t SELECT generate_series(1, 10)")
    ((now,),) = sandbox.sql(a, "SELECT pg_current_wal_lsn()::text")
    target = lsn_from_text(str(now))
    _switch(sandbox, a, 2)
    redo = _restartpoint(sandbox, a, b)
    assert redo >= (segment_number(fetched[-1], _SEGMENT) + 1) * _SEGMENT  # they were due for removal...
    assert set(fetched) <= _wal_files(sandbox, b)  # ...but KeepLogSeg honours the copy on a standby
    _advance(sandbox, b, target)  # decoded from restart_lsn, through the fetched segments

    # A failover: b is promoted (timeline 2) with its copy as the slot; c is cloned from b afterwards.
    c = sandbox.settings("node-c", parameters=a.parameters)
    assert sandbox.run(a, "stop", mode="fast").ok
    assert sandbox.run(b, "promote").ok
    _switch(sandbox, b, 2)
    _clone(sandbox, b, c)
    across = _copied(sandbox, c, b.port)
    assert {name[:8] for name in across} == {"00000001", "00000002"}, across  # both timelines' files
    ((now,),) = sandbox.sql(b, "SELECT pg_current_wal_lsn()::text")
    _advance(sandbox, c, lsn_from_text(str(now)))


def _clone(sandbox: PgSandbox, primary: PgSettings, standby: PgSettings) -> None:
    assert sandbox.run(primary, "ensure_slots", names=[standby.slot_name]).ok
    assert sandbox.run(standby, "basebackup", from_host="127.0.0.1", from_port=primary.port,
                       source_member=primary.name).ok
    assert sandbox.run(standby, "start").ok


def _copied(sandbox: PgSandbox, standby: PgSettings, port: int) -> list[str]:
    """Copy the slot cdc into `standby` from the primary at `port`; the WAL segments it fetched."""
    copied = _copy(standby, port, ["cdc"])
    assert copied["ok"] and "installed" in str(copied["message"]), copied
    pg = sandbox.wait_for(standby, lambda pg: pg.is_replica and bool(pg.logical_slots), what="the copy restored")
    (copy,) = _logical(pg)
    assert copy.name == "cdc" and copy.catalog_xmin is not None
    return [str(name) for name in copied["segments"]]  # type: ignore[attr-defined]


def _advance(sandbox: PgSandbox, standby: PgSettings, target: int) -> None:
    """Advance the copy on `standby` to `target` once replayed (decoding from its restart_lsn)."""
    sandbox.wait_for(standby, lambda pg: (pg.replay_lsn or 0) >= target, what="replayed the target")
    advanced = sandbox.run(standby, "advance_logical_slots", targets=[["cdc", "postgres", target]])
    assert advanced.ok and "cdc" in advanced.message, advanced.message
    (after,) = _logical(sandbox.probe(standby))
    assert after.confirmed_flush == target


def _switch(sandbox: PgSandbox, pg: PgSettings, times: int) -> None:
    """Write, switch to a new WAL segment and checkpoint, `times` times, on the primary `pg`."""
    sandbox.sql(pg, "INSERT INTO t VALUES (0); SELECT pg_switch_wal(); CHECKPOINT; " * times)  # one worker call


def _restartpoint(sandbox: PgSandbox, primary: PgSettings, standby: PgSettings) -> int:
    """Let `standby` replay the primary's last checkpoint, then make a restartpoint there (which removes
    the WAL files nothing holds before its redo position); returns that redo position."""
    ((now,),) = sandbox.sql(primary, "SELECT pg_current_wal_lsn()::text")
    target = lsn_from_text(str(now))
    sandbox.wait_for(standby, lambda pg: (pg.replay_lsn or 0) >= target, what="replayed the checkpoint")
    sandbox.sql(standby, "CHECKPOINT")
    ((redo,),) = sandbox.sql(standby, "SELECT redo_lsn::text FROM pg_control_checkpoint()")
    return lsn_from_text(str(redo))


def _wal_files(sandbox: PgSandbox, pg: PgSettings) -> set[str]:
    return {str(name) for (name,) in sandbox.sql(pg, "SELECT name FROM pg_ls_waldir()")}
