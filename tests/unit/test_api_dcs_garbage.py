"""Garbage in the `failover` and `config` keys, through the real server against a real etcd (issue 20,
items 4 and 7): an unreadable `failover` key must not block switchovers forever and DELETE
/switchover clears it; an unreadable `config` is an error for GET and PATCH (a PATCH over it would
store only the patch), while PUT may replace it."""
# ruff: noqa: F811  (the fixtures of test_api_management, imported, are parameters here)

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pgwarden.dcs.etcd3 import Etcd3Dcs
from pgwarden.dcs.etcd_http import op_put
from pgwarden.model import ClusterStatus, ClusterView, LeaderKey
from tests.unit.test_api_management import (  # noqa: F401  (fixtures)
    CONFIG,
    Client,
    FakeControl,
    _stored_failover,
    client,
    cluster_dcs,
    control,
    holder,
    make_dcs,
    shared_etcd,
)


async def _put_raw(dcs: Etcd3Dcs, key: str, text: str) -> None:
    """Write `text` as is, the way `etcdctl put` would."""
    succeeded, _ = await dcs._txn("raw write", [], [op_put(dcs._key(key), text.encode())])
    assert succeeded


async def test_switchover_over_an_unreadable_failover_key_replaces_it(client: Client, control: FakeControl) -> None:
    dcs = control.dcs
    assert isinstance(dcs, Etcd3Dcs)
    await _put_raw(dcs, "failover", "{garbage")

    async def agent_switches(old: str | None) -> ClusterView:
        return ClusterView("demo", leader=LeaderKey("n2"))

    control.on_wait = agent_switches
    response = await client.post("/switchover", json={"leader": "n1", "candidate": "n2"})
    assert (response.status, await response.text()) == (200, 'Successfully switched over to "n2"')
    assert await _stored_failover(dcs) == {"leader": "n1", "member": "n2"}


async def test_delete_switchover_clears_an_unreadable_failover_key(client: Client, control: FakeControl) -> None:
    dcs = control.dcs
    assert isinstance(dcs, Etcd3Dcs)
    await _put_raw(dcs, "failover", "not json at all")
    assert (await dcs.get_cluster()).unreadable.keys() == {"failover"}

    deleted = await client.delete("/switchover")
    assert deleted.status == 200
    assert "unreadable" in await deleted.text()
    after = await dcs.get_cluster()
    assert after.failover is None and after.unreadable == {}
    assert control.wakeups == 1

    again = await client.delete("/switchover")
    assert (again.status, await again.text()) == (404, "no switchover is scheduled")


async def test_get_config_over_unreadable_config_is_an_error(client: Client, control: FakeControl) -> None:
    dcs = control.dcs
    assert isinstance(dcs, Etcd3Dcs)
    await _put_raw(dcs, "config", '{"ttl": 30, "loop_wait": ')
    response = await client.get("/config")
    assert response.status == 502
    assert "the stored /config is not valid JSON" in await response.text()


async def _raw(dcs: Etcd3Dcs, key: str) -> str:
    response = await dcs._call("read", lambda c: c.range(dcs._key(key)))
    (kv,) = response.kvs
    text: str = kv.value.decode()
    return text


async def test_patch_over_unreadable_config_is_refused_and_writes_nothing(
    client: Client, control: FakeControl
) -> None:
    dcs = control.dcs
    assert isinstance(dcs, Etcd3Dcs)
    garbage = '{"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}'
    await _put_raw(dcs, "config", garbage)
    response = await client.patch("/config", json={"pause": True})
    assert response.status == 503
    assert "the stored /config is not valid JSON" in await response.text()
    assert await _raw(dcs, "config") == garbage  # not replaced by {"pause": true}
    assert control.wakeups == 0


async def test_put_replaces_an_unreadable_config(client: Client, control: FakeControl) -> None:
    dcs = control.dcs
    assert isinstance(dcs, Etcd3Dcs)
    await _put_raw(dcs, "config", "[1, 2, 3]")
    response = await client.put("/config", json=CONFIG)
    assert (response.status, await response.json()) == (200, CONFIG)
    after = await dcs.get_cluster()
    assert after.config is not None and dict(after.config.value) == CONFIG and after.unreadable == {}
    patched = await client.patch("/config", json={"pause": True})
    body: dict[str, Any] = await patched.json()
    assert patched.status == 200 and body == {**CONFIG, "pause": True}


async def test_a_garbage_reserved_timeline_never_reaches_the_clients_floor(
    make_dcs: Callable[[str], Awaitable[Etcd3Dcs]],
) -> None:
    """The agents kept the highest timeline ever read in memory, so garbage came back after it was
    deleted; now an implausible one is never read, and the leader writes its own status back."""
    leader = await make_dcs("n1")
    assert await leader.acquire_leader()
    assert await leader.update_leader(ClusterStatus(optime=100, timeline=2))
    await _put_raw(leader, "status", '{"optime": 100, "timeline": 20000}')
    view = await leader.get_cluster()
    assert view.status.timeline is None and view.status.optime == 100
    assert await leader.update_leader(ClusterStatus(optime=100, timeline=2))  # the same text as before
    stored = json.loads(await _raw(leader, "status"))
    assert stored["timeline"] == 2  # rewritten although unchanged on our side; never 20000
