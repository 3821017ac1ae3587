"""Synchronous replication's safety rules: when a `/sync` (who may promote) and an ssn (who
acknowledges a commit) are safe together, and what guards commits acknowledged under an earlier ssn.

The safety argument, in one place (docs/synchronous.md says it for operators):

* An *acknowledgement rule* is what the primary's `synchronous_standby_names` (ssn) makes a commit
  wait for: `k` standbys out of the names `N` (`FIRST k (N)` and `ANY k (N)` both ack through `k`
  of `N`; an empty ssn, or one with `*`, counts as k=0: nobody we know need hold the commit).
* A *promotion rule* is what `/sync` says, with Patroni's meaning of its `quorum` `q` (the number
  of voters *other than the candidate* the candidate must see): a voter of `V` may promote when at
  least `q` other voters are reachable and not ahead of it; a replica that is not a voter needs `q + 1`
  of them (in `on` mode it may not promote at all). Either way a *promotion set* is `q + 1` voters at
  or behind the candidate. Patroni writes `q = |V| - k` for `ANY k` over `V` (2 voters, `ANY 1`: 1;
  `ANY 2`: 0; a single voter: 0), and `q = 0` in `on` mode, where every voter must confirm.
* Both rules are safe together when every promotion set meets every acknowledgement set: when
  `q >= |V|` (nobody can gather `q + 1` voters), or `k > |N|` (nothing can be acknowledged), or
  `q + k >= |V ∪ N|`, i.e. `(q + 1) + k > |V ∪ N|` (`quorum_is_safe`). The primary changes ssn and
  `/sync` one step at a time and checks every intermediate pair, so the rule holds at every instant: in
  particular a standby joins the ssn before `/sync`, and leaves `/sync` before the ssn.
* Commits acknowledged under an ssn that is no longer in force are covered by a `Legacy` record: the
  `/sync` that was in force when the ssn changed still guards them until every voter and ssn name is
  past `barrier`, the primary's WAL position observed once the change had taken effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgwarden.core.sync.ssn import PLACEHOLDER, Ssn, SsnKind, name_key
from pgwarden.model import LSN


@dataclass(frozen=True, slots=True)
class AckRule:
    """A commit is acknowledged once `k` of `names` (keys) hold it."""

    names: frozenset[str]
    k: int


def ack_rule(ssn: Ssn | None) -> AckRule:
    """What an ssn (None: unreadable) guarantees about who holds an acknowledged commit.

    `*` may be any standby at all, so it guarantees nothing, like an empty ssn. The strict placeholder
    is nobody: it only makes `k` unreachable, so commits wait.
    """
    if ssn is None or ssn.kind is SsnKind.NONE or "*" in ssn.names:
        return AckRule(frozenset(), 0)
    return AckRule(frozenset(k for k in ssn.keys if k != name_key(PLACEHOLDER)), ssn.num)


def promotion_set_size(quorum: int) -> int:
    """How many voters a promotion rests on: the candidate and `quorum` others, or `quorum + 1` others
    for a candidate that is not a voter (a negative `quorum` counts as 0)."""
    return max(0, quorum) + 1


def quorum_is_safe(voters: frozenset[str], quorum: int, rule: AckRule) -> bool:
    """Every promotion set (`quorum + 1` voters) meets every set of `rule.k` acknowledging standbys:
    `quorum + k >= |voters ∪ names|`, or no such promotion set or acknowledgement exists."""
    size = promotion_set_size(quorum)
    return size > len(voters) or rule.k > len(rule.names) or size + rule.k > len(voters | rule.names)


@dataclass(frozen=True, slots=True)
class Legacy:
    """Commits acknowledged before the ssn last changed: any `quorum + 1` of `voters` hold them (the
    `/sync` then in force was safe for that ssn), and so does every standby past `barrier`."""

    voters: tuple[str, ...]
    quorum: int
    barrier: LSN | None = None
    """The primary's WAL position one observation after the change was seen (None: not yet known)."""


def legacy_is_safe(voters: frozenset[str], quorum: int, legacy: Legacy, caught_up: frozenset[str]) -> bool:
    """Every promotion set of `voters` (`quorum + 1` of them) holds the commits `legacy` guards."""
    past = caught_up if legacy.barrier is not None else frozenset()
    unsure = voters - past
    size = promotion_set_size(quorum)
    if size > len(unsure):
        return True  # every promotion set includes a standby past the barrier
    old = frozenset(name_key(v) for v in legacy.voters)
    # A promotion set within `unsure` has at least `size - |unsure - old|` former voters: enough for
    # one of the former promotion sets, which met every acknowledgement set of the former ssn.
    return size - len(unsure - old) >= promotion_set_size(legacy.quorum)
