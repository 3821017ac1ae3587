"""The pure HA decision core: decide(Snapshot) -> Decision. No IO, no clock, no logging, no globals."""

from pgwarden.core.decide import decide, extended_wake
from pgwarden.core.render import render
from pgwarden.core.types import Decision, Memory, Outcome, Snapshot

__all__ = ["Decision", "Memory", "Outcome", "Snapshot", "decide", "extended_wake", "render"]
