"""A rewind keeps the state files of the permanent physical slots it is told to keep (pg_rewind itself empties
pg_replslot): read before, written back after."""

from __future__ import annotations

import sys
from pathlib import Path

from pgwarden.postgres.controller import _clear_slot_dirs, _read_physical_states, write_slot_states


def _slot(replslot: Path, name: str, database: int) -> bytes:
    state = bytearray(200)
    state[80:84] = database.to_bytes(4, sys.byteorder)
    (replslot / name).mkdir()
    (replslot / name / "state").write_bytes(bytes(state))
    return bytes(state)


def test_only_named_physical_slots_survive(tmp_path: Path) -> None:
    barman = _slot(tmp_path, "barman", 0)
    _slot(tmp_path, "n2", 0)
    _slot(tmp_path, "cdc", 5)  # logical: its history is gone whatever the configuration says
    (tmp_path / "broken").mkdir()  # no state file
    kept = _read_physical_states(tmp_path, ["barman", "cdc", "broken", "../x"])
    assert kept == (("barman", barman),)
    _clear_slot_dirs(tmp_path)  # what pg_rewind leaves: nothing
    assert write_slot_states(tmp_path, kept).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["barman"]
    assert (tmp_path / "barman" / "state").read_bytes() == barman
