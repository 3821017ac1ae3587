"""Single decisions of pgwarden.core.decide, one row per situation, from tests/core/cases/*.txt.

The row language is documented in tests/core/cases/README.txt. A row with a BUG column is a known
defect of the core, kept as a strict xfail so that fixing the core turns it red (remove the column then).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgwarden.core import decide
from pgwarden.core.reasons import Why
from tests.core.rowlang import Case, explain, load_table

CASES_DIR = Path(__file__).parent / "cases"


def all_cases() -> list[Case]:
    return [case for path in sorted(CASES_DIR.glob("*.txt")) if path.name != "README.txt"
            for case in load_table(path)]


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=case.bug, strict=True)] if case.bug else []
    return pytest.param(case, id=f"{case.where} {case.name}", marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in all_cases()])
def test_decision(case: Case) -> None:
    decision = decide(case.snapshot)
    problems = case.expected.mismatches(decision)
    assert not problems, f"{case.where} {case.name}: {'; '.join(problems)}\n  got: {explain(decision)}"


def test_case_names_are_unique() -> None:
    seen: dict[str, str] = {}
    for case in all_cases():
        assert case.name not in seen, f"{case.where}: duplicate case name (first at {seen[case.name]})"
        seen[case.name] = case.where


# Reasons no public input reaches. The sans-io rule: a branch no snapshot reaches should be deleted or
# given an input. NO_ACTION is never returned by decide(): it is only the agent's fallback when the core
# raises.
UNREACHED_WHYS = {Why.NO_ACTION,  # only the agent's fallback when the core raises
                  # synchronous mode has no row language yet: tests/core/test_sync_wiring.py covers these
                  Why.SYNC_STEP, Why.SYNC_NOT_ALLOWED, Why.SYNC_PRE_PROMOTE,
                  Why.WAITING_FOR_POOLERS}  # covered by tests/core/test_poolers.py


def test_every_why_is_reached_by_a_row() -> None:
    reached = {decide(c.snapshot).reason.why for c in all_cases() if not c.bug}
    assert set(Why) - reached == UNREACHED_WHYS, (
        "update UNREACHED_WHYS (and ideally delete the dead reasons from the core)")


def test_every_action_is_reached_by_a_row() -> None:
    kinds = {decide(c.snapshot).action.kind for c in all_cases() if not c.bug}
    assert kinds == {"wait", "bootstrap", "clone", "acquire leader", "renew leader", "promote", "demote",
                     "start", "follow", "rewind", "remove data directory", "release leader", "shutdown",
                     "restart", "reinitialize", "ensure slots", "failsafe ping", "copy logical slots"}
