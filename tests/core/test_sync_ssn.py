"""synchronous_standby_names: parsing what PostgreSQL reports, rendering what pgwarden writes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.core.sync.safety import AckRule, ack_rule
from pgwarden.core.sync.ssn import ASYNC, PLACEHOLDER, Ssn, SsnKind, SsnSyntaxError, parse_ssn

P, Q = SsnKind.PRIORITY, SsnKind.QUORUM

PARSED = [
    ("", ASYNC),
    ("   ", ASYNC),
    ("n1", Ssn(P, 1, ("n1",))),
    ("n1, n2", Ssn(P, 1, ("n1", "n2"))),
    ("2 (n1, n2, n3)", Ssn(P, 2, ("n1", "n2", "n3"))),
    ("FIRST 2 (n1,n2)", Ssn(P, 2, ("n1", "n2"))),
    ("first 1 (n1)", Ssn(P, 1, ("n1",))),
    ("ANY 2 (n1, n2, n3)", Ssn(Q, 2, ("n1", "n2", "n3"))),
    ("any 1(a)", Ssn(Q, 1, ("a",))),
    ("*", Ssn(P, 1, ("*",))),
    ("FIRST 1 (*)", Ssn(P, 1, ("*",))),
    ('ANY 1 ("Node-A", "with ""quote""", "a b")', Ssn(Q, 1, ("Node-A", 'with "quote"', "a b"))),
    ('"first"', Ssn(P, 1, ("first",))),  # a quoted keyword is a name
    ("1 (2, 3)", Ssn(P, 1, ("2", "3"))),  # numbers are names inside the list
    ("node_1$x", Ssn(P, 1, ("node_1$x",))),
]


@pytest.mark.parametrize(("text", "expected"), PARSED, ids=[t or "empty" for t, _ in PARSED])
def test_parse(text: str, expected: Ssn) -> None:
    assert parse_ssn(text) == expected


@pytest.mark.parametrize("text", ["FIRST (a)", "ANY 1 a", "ANY 0 (a)", "2 (a", "a,,b", "(a)", "a b",
                                  '"open', "ANY 1 ()", "a;b", "FIRST", "1 (a) b"])
def test_reject(text: str) -> None:
    with pytest.raises(SsnSyntaxError):
        parse_ssn(text)


def test_render_quotes_every_name() -> None:
    assert Ssn(P, 2, ("a", 'b"c')).render() == 'FIRST 2 ("a","b""c")'
    assert Ssn(Q, 1, ("x",)).render() == 'ANY 1 ("x")'
    assert ASYNC.render() == ""


def test_same_as_ignores_case_and_order() -> None:
    assert parse_ssn("ANY 1 (A, b)").same_as(parse_ssn('ANY 1 ("b","a")'))
    assert not parse_ssn("ANY 1 (a, b)").same_as(parse_ssn("FIRST 1 (a, b)"))
    assert not parse_ssn("ANY 1 (a, b)").same_as(parse_ssn("ANY 2 (a, b)"))
    assert parse_ssn("").same_as(ASYNC)


def test_ack_rules() -> None:
    assert ack_rule(parse_ssn("FIRST 2 (a, B)")) == AckRule(frozenset({"a", "b"}), 2)
    assert ack_rule(parse_ssn("*")) == AckRule(frozenset(), 0)  # any standby at all: guarantees nothing
    assert ack_rule(None) == AckRule(frozenset(), 0)
    assert ack_rule(Ssn(P, 1, (PLACEHOLDER,))) == AckRule(frozenset(), 1)  # nobody can acknowledge


names = st.text(alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1,
                max_size=8)


@given(st.sampled_from([P, Q]), st.lists(names, min_size=1, max_size=4), st.integers(1, 4))
def test_render_then_parse_is_identity(kind: SsnKind, members: list[str], num: int) -> None:
    ssn = Ssn(kind, num, tuple(members))
    assert parse_ssn(ssn.render()) == ssn


@given(st.text(max_size=30))
def test_parse_never_fails_otherwise(text: str) -> None:
    with contextlib.suppress(SsnSyntaxError):
        parse_ssn(text)
