"""The pure HA decision core: decide(Snapshot) -> Decision. No IO, no clock, no logging, no globals."""

from pgwarden.core.actions import Decision
from pgwarden.core.decide import decide, extended_wake
from pgwarden.core.render import render
from pgwarden.core.snapshot import Memory, Outcome, Snapshot

__all__ = ["Decision", "Memory", "Outcome", "Snapshot", "decide", "extended_wake", "render"]
