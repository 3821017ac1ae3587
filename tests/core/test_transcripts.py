"""Sequences of decisions, as transcripts in tests/core/transcripts/*.txt (after etcd-io/raft's datadriven).

A transcript is a series of blocks. A block is commands, a `----` line, then the expected output and a
blank line. Commands (phrases in the row language of tests/core/cases/README.txt):

    pg <phrase> / dcs <phrase> / peers <phrase>   replace that part of the observation
    node <phrase>       replace me, settings and tags, task, shutdown, request, wall; memory tokens (lease=...,
                        lease=none for a fresh memory when the transcript switches to another node) set memory
    advance <seconds>   move `now` forward (and the wall clock with it)
    outcome ok|fail [sent=<rel>] [kind=<alias>] [detail='<text>']   report how the previous decision's
                        action went (sent at the instant of that decision unless `sent` gives one relative
                        to the current now; `kind` for an outcome of another kind, e.g. race; `detail`)
    decide              run decide() and print the decision; its memory is fed into the next decision

Each decision is fed forward exactly like the agent loop does: memory from the previous Decision, the
outcomes reported since. `# BUG: ...` on the first line marks a transcript as a known defect (strict xfail);
its expected output is the correct behaviour, written by hand.

Set PGWARDEN_REWRITE=1 to regenerate the expected output in place (BUG transcripts excepted); commit
only diffs you understand.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgwarden.core import decide, render
from pgwarden.core.actions import Decision
from pgwarden.core.snapshot import Memory, Outcome
from pgwarden.model import LocalPg
from tests.core import builders as b
from tests.core.rowlang import (
    ACTION_ALIASES,
    NodeSpec,
    RowError,
    build_dcs,
    build_node,
    build_peers,
    build_pg,
    describe_action,
    describe_reason,
)

TRANSCRIPTS = Path(__file__).parent / "transcripts"
REWRITE = os.environ.get("PGWARDEN_REWRITE") == "1"


@dataclass
class Block:
    commands: list[str]
    expected: list[str]


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    commands: list[str] = []
    expected: list[str] | None = None
    for line in [*text.splitlines(), ""]:
        if expected is None:
            if line.strip() == "----":
                expected = []
            elif line.strip():
                commands.append(line)
        elif line.strip():
            expected.append(line)
        else:
            blocks.append(Block(commands, expected))
            commands, expected = [], None
    if commands and any(not c.startswith("#") for c in commands):
        raise RowError("commands after the last '----' block")
    return blocks


@dataclass
class World:
    """The observation being edited by the commands, plus what the loop carries between decisions."""

    now: float = b.NOW
    pg: str = ""
    dcs: str = ""
    peers: str = ""
    node: NodeSpec = field(default_factory=NodeSpec)
    memory: Memory = field(default_factory=Memory)
    outcomes: list[Outcome] = field(default_factory=list)
    previous: Decision | None = None
    previous_now: float = b.NOW

    def run(self, command: str) -> list[str]:
        verb, _, rest = command.strip().partition(" ")
        if verb == "#" or verb.startswith("#"):
            return []
        if verb in ("pg", "dcs", "peers"):
            setattr(self, verb, rest)
        elif verb == "node":
            self.node = build_node(rest, self.now)
            if self.node.memory is not None:
                self.memory = self.node.memory
        elif verb == "advance":
            self.now += float(rest)
        elif verb == "outcome":
            self.outcomes.append(self._outcome(rest))
        elif verb == "decide":
            return self._decide()
        else:
            raise RowError(f"unknown command {command!r}")
        return []

    def _outcome(self, rest: str) -> Outcome:
        if self.previous is None:
            raise RowError("outcome before any decision")
        result, *opts = shlex.split(rest)
        sent_at = self.previous_now
        kind, detail = self.previous.action.kind, ""
        for opt in opts:
            key, _, value = opt.partition("=")
            if key == "sent":
                sent_at = self.now + float(value)
            elif key == "kind":
                kind = ACTION_ALIASES[value]
            elif key == "detail":
                detail = value
            else:
                raise RowError(f"unknown outcome option {opt!r}")
        return Outcome(action=kind, ok=result == "ok", detail=detail, sent_at=sent_at)

    def _decide(self) -> list[str]:
        pg: LocalPg | None = build_pg(self.pg)
        snap = b.snapshot(me=self.node.me, pg=pg, dcs=build_dcs(self.dcs), peers=build_peers(self.peers),
                          memory=self.memory, last=tuple(self.outcomes), now=self.now,
                          settings=self.node.settings, task=self.node.task,
                          shutting_down=self.node.shutting_down, wall=self.node.wall + self.now - b.NOW,
                          request=self.node.request)
        decision = decide(snap)
        self.previous, self.previous_now = decision, self.now
        self.memory, self.outcomes = decision.memory, []
        return [
            f"-> {describe_action(decision.action)}",
            f"   {describe_reason(decision)}",
            f"   log: {render(decision.reason)}",
            f"   wake: {_rel(decision.wake_at - self.now)}",
            f"   memory: {describe_memory(decision.memory, self.now)}",
        ]


def _rel(delta: float) -> str:
    return f"{delta:+.1f}"


def describe_memory(m: Memory, now: float) -> str:
    parts = []
    if m.lock_deadline is not None:
        parts.append(f"lease={_rel(m.lock_deadline - now)}")
    if m.start_deadline is not None:
        parts.append(f"start-deadline={_rel(m.start_deadline - now)}")
    if m.start_failures:
        parts.append(f"start-failures={m.start_failures}")
    if m.rewind_failed:
        parts.append("rewind-failed")
    if m.paused_when_last_seen:
        parts.append("was-paused")
    if m.slot_last_seen:
        parts.append("seen=" + ",".join(f"{n}@{_rel(t - now)}" for n, t in m.slot_last_seen))
    if m.bootstrap_failures:
        parts.append(f"bootstrap-failures={m.bootstrap_failures}")
    if m.clone_failures:
        parts.append(f"clone-failures={m.clone_failures}")
    if m.retry_at is not None:
        parts.append(f"retry={_rel(m.retry_at - now)}")
    if m.last_failure:
        parts.append(f"failure={m.last_failure!r}")
    return " ".join(parts) or "-"


def run_transcript(text: str) -> tuple[list[Block], list[list[str]]]:
    world = World()
    blocks = parse_blocks(text)
    return blocks, [[line for cmd in block.commands for line in world.run(cmd)] for block in blocks]


def format_transcript(blocks: list[Block], outputs: list[list[str]]) -> str:
    pairs = zip(blocks, outputs, strict=True)
    return "\n".join("\n".join([*blk.commands, "----", *out, ""]) for blk, out in pairs)


def _param(path: Path) -> object:
    first = path.read_text().splitlines()[0]
    marks = [pytest.mark.xfail(reason=first[2:], strict=True)] if first.startswith("# BUG:") else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in sorted(TRANSCRIPTS.glob("*.txt"))])
def test_transcript(path: Path) -> None:
    text = path.read_text()
    blocks, outputs = run_transcript(text)
    if REWRITE and not text.startswith("# BUG:"):  # a BUG transcript holds the wanted output: keep it
        path.write_text(format_transcript(blocks, outputs))
        return
    for number, (block, output) in enumerate(zip(blocks, outputs, strict=True), start=1):
        shown = "\n".join(c for c in block.commands if not c.startswith("#"))
        assert output == block.expected, f"{path.name} block {number}:\n{shown}\n"


def test_parse_blocks_round_trip() -> None:
    text = "# setup\npg primary\ndecide\n----\n-> wait\n   x\n\nadvance 1\ndecide\n----\n-> wait\n"
    blocks = parse_blocks(text)
    assert [b.commands for b in blocks] == [["# setup", "pg primary", "decide"], ["advance 1", "decide"]]
    assert format_transcript(blocks, [blk.expected for blk in blocks]) == text
