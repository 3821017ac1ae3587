"""The faults a drill injects: a switchover or failover through REST, or SIGKILL of local processes.

Kills work only for a member whose PostgreSQL (and, for a host loss, agent) runs on this machine. The
processes are found from the sockets they listen on (the member's published addresses), then checked:
the PostgreSQL listener must be the postmaster of a data directory (its working directory holds a
`postmaster.pid` naming it). Nothing is killed on a guess.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pgwarden.drill.topology import DrillError, MemberInfo, rest_call
from pgwarden.rest_client import RestSettings, Unreachable


class Fault(StrEnum):
    SWITCHOVER = "switchover"
    FAILOVER = "failover"
    POSTMASTER_KILL = "postmaster-kill"
    HOST_KILL = "host-kill"

    @property
    def kills(self) -> bool:
        return self in (Fault.POSTMASTER_KILL, Fault.HOST_KILL)


# --------------------------------------------------------------------------------------------------
# Through the REST API


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """The REST answer to a switchover / failover request, and how long it took to come."""

    status: int
    text: str
    seconds: float

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def request_switchover(leader: MemberInfo, candidate: str | None, settings: RestSettings,
                       timeout: float) -> ApiAnswer:
    """POST /switchover to the leader: `{"leader": ..., "candidate": ...}` (candidate optional)."""
    body: dict[str, str] = {"leader": leader.name}
    if candidate:
        body["candidate"] = candidate
    return _post(leader, "/switchover", body, settings, timeout)


def request_failover(via: MemberInfo, candidate: str, settings: RestSettings, timeout: float) -> ApiAnswer:
    """POST /failover `{"candidate": ...}`; any member accepts it."""
    return _post(via, "/failover", {"candidate": candidate}, settings, timeout)


def _post(member: MemberInfo, path: str, body: dict[str, str], settings: RestSettings,
          timeout: float) -> ApiAnswer:
    """The answer; status 0 and the reason when the member cannot be reached."""
    started = time.monotonic()
    reply = rest_call(member, "POST", path, settings, body, timeout)
    seconds = time.monotonic() - started
    if isinstance(reply, Unreachable):
        return ApiAnswer(0, reply.reason, seconds)
    return ApiAnswer(reply.status, reply.text.strip(), seconds)


def describe_refusal(fault: Fault, answer: ApiAnswer) -> str:
    what = f"POST /{fault.value}"
    if answer.status == 0:
        return f"{what} got no answer: {answer.text}"
    if answer.status == 501:
        return f"{what} is not implemented by this agent yet (HTTP 501): {answer.text}"
    if answer.status == 401:
        return f"{what} was refused (HTTP 401): set restapi.authentication or ctl.authentication in the config"
    return f"the cluster refused the {fault.value} (HTTP {answer.status}): {answer.text or '(no text)'}"


# --------------------------------------------------------------------------------------------------
# Local processes


@dataclass(frozen=True, slots=True)
class LocalTargets:
    """The processes of one member on this machine."""

    member: str
    postmaster_pid: int
    data_dir: Path
    agent_pid: int | None


def is_local_address(host: str) -> bool:
    """True for loopback and for any address a socket on this machine can bind (one of ours)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if ipaddress.ip_address(address).is_loopback:
            return True
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            return True
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(inode)
    return inodes


def listening_pids(port: int) -> set[int]:
    """PIDs of the processes holding a TCP listening socket on `port` (needs the right to read their fds)."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        pids.add(int(entry.name))
                        break
    return pids


def _verified_postmaster(pid: int) -> Path | None:
    """The data directory if `pid` is a postmaster: its cwd holds a postmaster.pid that names it."""
    try:
        data_dir = Path(os.readlink(f"/proc/{pid}/cwd"))
        first_line = (data_dir / "postmaster.pid").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return data_dir if first_line.strip() == str(pid) else None


def find_local_targets(member: MemberInfo, *, need_agent: bool) -> LocalTargets:
    """The member's postmaster (and agent) on this machine; DrillError with the reason otherwise."""
    pg = member.pg_address
    if pg is None or not is_local_address(pg[0]):
        raise DrillError(f"{member.name} runs on {pg[0] if pg else 'an unknown host'}, not on this machine: "
                         "process kills are only possible for local nodes (use --fault failover instead)")
    postmasters = [(pid, d) for pid in listening_pids(pg[1]) if (d := _verified_postmaster(pid)) is not None]
    if len(postmasters) != 1:
        raise DrillError(f"cannot find {member.name}'s postmaster listening on port {pg[1]} "
                         "(run the drill as root or as the user that runs PostgreSQL)")
    pid, data_dir = postmasters[0]
    agent_pid = _find_agent(member) if need_agent else None
    return LocalTargets(member.name, pid, data_dir, agent_pid)


def _find_agent(member: MemberInfo) -> int:
    api = member.api_address
    if api is None or not is_local_address(api[0]):
        raise DrillError(f"{member.name}'s agent (REST {member.api_url}) is not on this machine")
    pids = listening_pids(api[1])
    if len(pids) != 1:
        raise DrillError(f"cannot find {member.name}'s agent listening on port {api[1]} "
                         f"(found {sorted(pids) or 'none'})")
    return pids.pop()


def _children(pids: set[int]) -> set[int]:
    """Every descendant of `pids` (by parent PID), so backends die with their postmaster."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = set(pids)
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found - pids
        found |= frontier
    return found


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_processes(roots: set[int]) -> None:
    """SIGKILL `roots` and all their descendants at the same instant, as a power loss would.

    They are frozen (SIGSTOP) first so that none of them sees another die and reacts.
    """
    _signal_all(roots, signal.SIGSTOP)
    victims = (roots | _children(roots)) - {os.getpid()}
    _signal_all(victims, signal.SIGSTOP)
    _signal_all(victims, signal.SIGKILL)


def kill_postmaster(targets: LocalTargets) -> None:
    """SIGKILL the postmaster only: its backends notice and exit; the agent stays."""
    _signal_all({targets.postmaster_pid}, signal.SIGKILL)


def kill_host(targets: LocalTargets) -> None:
    """SIGKILL the agent, the postmaster and every process they started: the host is gone."""
    roots = {targets.postmaster_pid}
    if targets.agent_pid is not None:
        roots.add(targets.agent_pid)
    kill_processes(roots)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone: its parent reaps it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False
