"""The pure HA decision core: decide(Snapshot) -> Decision. No IO, no clock, no logging, no globals."""

from pgwarden.core.decide import decide
from pgwarden.core.render import render
from pgwarden.core.types import Decision, Memory, Outcome, Snapshot

__all__ = ["Decision", "Memory", "Outcome", "Snapshot", "decide", "render"]
