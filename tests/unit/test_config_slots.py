"""Permanent slots (`slots` and its aliases) and `ignore_slots` in /config: every form Patroni accepts,
what the compatibility table says of them, and what the decision core is given."""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.config.dynamic import ignore_matchers_of, permanent_slots_of
from pgwarden.config.layering import ha_settings_from
from pgwarden.config.support import Support, dynamic_refusals, judge_dynamic
from pgwarden.config.validation import config_problems, parse_dynamic
from pgwarden.core.snapshot import PermanentSlot, SlotMatcher
from pgwarden.model import Tags

EVERY_FORM: dict[str, Any] = {
    "empty": None,
    "zero": 0,
    "blank": "",
    "section": {},
    "typed": {"type": "physical"},
    "primary_only": {"type": "physical", "cluster_type": "primary"},
    "standby_only": {"type": "physical", "cluster_type": "standby"},
}


@pytest.mark.parametrize("key", ["slots", "permanent_slots", "permanent_replication_slots"])
def test_every_physical_form_is_read_and_implemented(key: str) -> None:
    config, warnings = parse_dynamic({key: EVERY_FORM})
    assert warnings == []
    assert permanent_slots_of(config) == (
        PermanentSlot("blank"), PermanentSlot("empty"), PermanentSlot("primary_only", cluster_type="primary"),
        PermanentSlot("section"), PermanentSlot("standby_only", cluster_type="standby"), PermanentSlot("typed"),
        PermanentSlot("zero"))
    assert judge_dynamic({key: EVERY_FORM}) == []
    assert config_problems({key: EVERY_FORM}) == []


def test_an_empty_section_is_no_slot() -> None:
    value: dict[str, Any] | None
    for value in (None, {}):
        config, warnings = parse_dynamic({"slots": value})
        assert permanent_slots_of(config) == () and warnings == []
        assert judge_dynamic({"slots": value}) == []


LOGICAL = {"type": "logical", "database": "app", "plugin": "pgoutput"}
WAL_LOGICAL = {"postgresql": {"parameters": {"wal_level": "logical"}}}


@pytest.mark.parametrize("key", ["slots", "permanent_slots", "permanent_replication_slots"])
def test_a_logical_entry_is_implemented_with_wal_level_logical(key: str) -> None:
    value = {key: {"barman": None, "cdc": LOGICAL}, **WAL_LOGICAL}
    assert dynamic_refusals(value) == []
    assert config_problems(value) == []
    config, warnings = parse_dynamic(value)
    assert warnings == []
    assert PermanentSlot("cdc", "logical", "app", "pgoutput") in permanent_slots_of(config)


@pytest.mark.parametrize("key", ["slots", "permanent_slots", "permanent_replication_slots"])
def test_a_logical_entry_without_wal_level_logical_is_refused_with_the_reason(key: str) -> None:
    replica = {"postgresql": {"parameters": {"wal_level": "replica"}}}
    for value in ({key: {"cdc": LOGICAL}}, {key: {"cdc": LOGICAL}, **replica}):
        (line,) = dynamic_refusals(value)
        assert line.startswith(f"{key}: logical slots need `postgresql.parameters.wal_level: logical`")
        assert config_problems(value) == [line]


@pytest.mark.parametrize("entry", [
    {"type": "logical"},
    {"type": "logical", "database": "app"},
    {"type": "logical", "plugin": "pgoutput"},
    {"type": "logical", "database": "", "plugin": "pgoutput"},
    {"type": "logical", "database": "app", "plugin": 7},
])  # fmt: skip
def test_a_logical_entry_without_database_or_plugin_is_refused_in_one_line(entry: dict[str, Any]) -> None:
    value = {"slots": {"cdc": entry}, **WAL_LOGICAL}
    (line,) = dynamic_refusals(value)
    assert line.startswith("slots: an entry pgwarden cannot read") and "needs `database` and `plugin`" in line


@pytest.mark.parametrize("entries", [
    {"Bad-Name": None},
    {"x" * 64: None},
    {"barman": {"type": "phisical"}},
    {"barman": {"cluster_type": "replica"}},
    {"barman": "physical"},
])
def test_an_entry_that_is_no_slot_is_refused(entries: dict[str, Any]) -> None:
    """Read as absent it would drop that slot (removed from /config): refused, so no agent adopts it."""
    (line,) = dynamic_refusals({"slots": entries})
    assert line.startswith("slots: an entry pgwarden cannot read")
    assert config_problems({"slots": entries})


def test_ignore_slots_are_implemented_and_read_as_matchers() -> None:
    value = {"ignore_slots": [{"name": "backup"}, {"type": "physical", "database": "app"},
                              {"plugin": "wal2json", "other": 1}]}
    assert [v for v in judge_dynamic(value) if v.support is not Support.IMPLEMENTED] == []
    config, warnings = parse_dynamic(value)
    assert warnings == []
    assert ignore_matchers_of(config) == (SlotMatcher(name="backup"), SlotMatcher(type="physical", database="app"),
                                          SlotMatcher(plugin="wal2json"))


def test_matchers_compare_every_attribute_given() -> None:
    assert SlotMatcher(name="backup").matches("backup")
    assert not SlotMatcher(name="backup").matches("barman")
    assert SlotMatcher(type="physical").matches("anything")
    assert not SlotMatcher(name="backup", database="app").matches("backup")  # a physical slot has no database
    assert SlotMatcher(name="cdc", type="logical", plugin="pgoutput").matches("cdc", "logical", "app", "pgoutput")
    assert SlotMatcher().matches("anything")


def test_the_core_is_given_the_slots_and_matchers() -> None:
    config, _ = parse_dynamic({"permanent_replication_slots": {"barman": 0}, "ignore_slots": [{"name": "backup"}]})
    settings = ha_settings_from(config, tags=Tags())
    assert settings.permanent_slots == (PermanentSlot("barman"),)
    assert settings.ignore_slots == (SlotMatcher(name="backup"),)
