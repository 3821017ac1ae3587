"""At start: is another agent already running under this member name?

Two agents with one name would fight over one member key and one identity (Patroni refuses to start
the second: "Can't start; there is already a node named '<name>' running"). The member key alone
cannot tell: after a crash or a restart of this very agent, the key of the dead process lives on
its lease until the lease expires. So the key is only the hint; the proof is its `api_url`
answering `GET /patroni` with this scope and this name. This agent's own REST API is not listening
yet when the check runs, so any such answer comes from another process.
"""

from __future__ import annotations

from collections.abc import Mapping

from pgwarden.model import ClusterView
from pgwarden.rest_client import RestClient

ASK_TIMEOUT = 2.0


def duplicate_name_line(name: str) -> str:
    """Patroni's CRITICAL line for a second agent with a name already running."""
    return f"Can't start; there is already a node named '{name}' running"


def answers_as(body: object, scope: str, name: str) -> bool:
    """A status JSON (`GET /patroni`) of an agent of `scope` named `name`."""
    if not isinstance(body, Mapping):
        return False
    about = body.get("patroni")
    if not isinstance(about, Mapping):
        return False
    return about.get("name") == name and about.get("scope") in (None, scope)


async def name_in_use(cluster: ClusterView, scope: str, name: str) -> bool:
    """True when `members/<name>` exists in `cluster` and its api_url answers as a running agent of
    that name. A silent api_url (a dead process's key still on its lease) is False."""
    member = cluster.member(name)
    if member is None or not member.api_url:
        return False
    async with RestClient() as client:
        body = await client.status(member.api_url, timeout=ASK_TIMEOUT)
    return answers_as(body, scope, name)
