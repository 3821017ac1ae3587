"""The `failsafe` key ({member name: api_url}, contract 2.8 and 3.1): decoded like the other optional
keys, garbage read as absent (unreadable, with a note) or its bad entries dropped, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.dcs import codec
from pgwarden.model import FAILSAFE_MAX_ENTRIES, FAILSAFE_MAX_NAME, FAILSAFE_MAX_URL, ClusterView, is_plain_text

URLS = {"n1": "http://10.0.0.1:8008/patroni", "n2": "http://10.0.0.2:8008/patroni"}


def decode(text: str, revision: int = 9) -> codec.DecodedCluster:
    return codec.decode_cluster("pg", {"leader": ("n1", 3), "failsafe": (text, revision)})


def test_a_patroni_failsafe_key_is_read() -> None:
    decoded = decode(json.dumps(URLS))
    assert decoded.view.failsafe == URLS
    assert decoded.notes == () and decoded.view.unreadable == {}


def test_no_key_is_none_and_an_empty_object_is_empty() -> None:
    assert codec.cluster_from_kv("pg", {}).failsafe is None
    assert ClusterView("pg").failsafe is None
    decoded = decode("{}")
    assert decoded.view.failsafe == {} and decoded.notes == ()


@pytest.mark.parametrize("text", ["", "{broken", "[]", '["n1"]', "null", "42", '"n1"', "[" * 100_000,
                                  json.dumps({f"m{i}": "http://x/patroni" for i in range(FAILSAFE_MAX_ENTRIES + 1)})])
def test_a_value_that_is_not_an_object_of_bounded_size_is_unreadable_with_one_note(text: str) -> None:
    decoded = decode(text, revision=17)
    assert decoded.view.failsafe is None
    assert decoded.view.unreadable == {"failsafe": 17}  # still there to be replaced or deleted
    assert len(decoded.notes) == 1 and "'failsafe'" in decoded.notes[0] and len(decoded.notes[0]) < 300
    assert decoded.view.leader is not None  # the rest of the scope is unharmed


@pytest.mark.parametrize("bad", [None, 1, True, ["http://x"], {"url": "http://x"}, "", "x" * (FAILSAFE_MAX_URL + 1),
                                 "http://x\n/patroni", "http://\ud800/patroni"])
def test_entries_whose_value_is_not_a_url_string_are_dropped_with_a_note(bad: Any) -> None:
    decoded = decode(json.dumps({**URLS, "n3": bad}))
    assert decoded.view.failsafe == URLS
    assert decoded.view.unreadable == {}
    assert len(decoded.notes) == 1 and "ignored 1 entries" in decoded.notes[0] and "'n3'" in decoded.notes[0]


@pytest.mark.parametrize("name", ["", "n" * (FAILSAFE_MAX_NAME + 1), "n\x00", "\ud800"])
def test_entries_whose_name_is_garbage_are_dropped(name: str) -> None:
    decoded = decode(json.dumps({**URLS, name: "http://x/patroni"}))
    assert decoded.view.failsafe == URLS
    assert len(decoded.notes) == 1 and len(decoded.notes[0]) < 300


def test_huge_garbage_never_floods_a_note() -> None:
    decoded = decode(json.dumps({"x" * 100_000: 1, "y": "z" * 100_000, **URLS}))
    assert decoded.view.failsafe == URLS
    assert len(decoded.notes) == 1 and len(decoded.notes[0]) < 300


def test_to_json_is_compact_and_stable() -> None:
    assert codec.failsafe_to_json({"n2": "b", "n1": "a"}) == '{"n1":"a","n2":"b"}'
    assert codec.failsafe_to_json({}) == "{}"


_names = st.text(min_size=1, max_size=20).filter(lambda t: is_plain_text(t, FAILSAFE_MAX_NAME))


@given(st.dictionaries(_names, _names.map(lambda h: f"http://{h}:8008/patroni"), max_size=8))
def test_round_trip(value: dict[str, str]) -> None:
    decoded = codec.decode_cluster("pg", {"failsafe": (codec.failsafe_to_json(value), 1)})
    assert decoded.view.failsafe == value and decoded.notes == ()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.one_of(_json.map(json.dumps), st.text(max_size=40), st.dictionaries(st.text(max_size=5), _json,
                                                                              max_size=4).map(json.dumps)))
def test_garbage_never_raises_and_what_is_kept_is_plain_text(text: str) -> None:
    decoded = codec.decode_cluster("pg", {"failsafe": (text, 1)})
    failsafe = decoded.view.failsafe
    assert failsafe is None or all(is_plain_text(k, FAILSAFE_MAX_NAME) and is_plain_text(v, FAILSAFE_MAX_URL)
                                   for k, v in failsafe.items())
    assert set(decoded.view.unreadable) <= {"failsafe"}
    assert (failsafe is None) == ("failsafe" in decoded.view.unreadable)
