"""The copy of a logical slot into a standby on real PostgreSQL 15 (the adapter only, no agent): the
leader's state file read over the rewind role's connection, written into the stopped standby, the copy
restored by PostgreSQL at start and advanced there with pg_replication_slot_advance."""

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
from tests.support.pg import REPO_ROOT, PgSandbox, settings_to_json

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL 15 and the postgres user"),
]

_COPY = """
import asyncio, json, sys
from pgwarden.postgres.controller import PgController
from tests.support.pg import settings_from_json
request = json.loads(sys.stdin.read())
pg = PgController(settings_from_json(request["settings"]))
async def main():
    read = await pg.read_slot_states("127.0.0.1", request["port"], request["names"])
    if not read.ok:
        return {"ok": False, "message": read.message, "waiting": read.waiting}
    stopped = await pg.stop("fast")
    written = pg.write_slot_states(read.states)
    started = await pg.start()
    return {"ok": stopped.ok and written.ok and started.ok, "message": written.message, "waiting": False}
print(json.dumps(asyncio.run(main())))
"""


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


def _copy(standby: PgSettings, port: int, names: list[str]) -> dict[str, object]:
    request = {"settings": settings_to_json(standby), "port": port, "names": names}
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

