"""The client finds the failover leader's promoted replica before the other Sentinels adopt
it, and never takes an address that does not answer as a master (DESIGN §4 v2).

Real servers: the replica set fixture (a primary, two replicas, three Sentinels), a real
SIGKILL, real SIGSTOPs; role checks against the real primary and replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as rex

from streams.address import RedisTarget
from streams.connection import connect
from streams.replica_set import ReplicaSet
from streams.sentinel_discovery import Answer, SentinelDiscovery
from streams.sentinel_watch import watch_switches
from streams.server import free_port
from tests.waiting import wait_for


class _Events:
    """Every message of some Sentinel channels, with the port of the Sentinel that sent it."""

    def __init__(self, group: ReplicaSet, channels: tuple[str, ...]) -> None:
        self.heard: list[tuple[int, str, str]] = []  # sentinel port, channel, data
        self._clients = [aioredis.Redis(port=s.port) for s in group.sentinels]
        self._tasks = [
            asyncio.create_task(self._listen(c, channels), name=f"events-{n}")
            for n, c in enumerate(self._clients)
        ]

    async def _listen(self, client: aioredis.Redis, channels: tuple[str, ...]) -> None:
        port = client.connection_pool.connection_kwargs["port"]
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(*channels)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None:
                    self.heard.append((port, message["channel"].decode(), message["data"].decode()))

    def first(self, channel: str) -> tuple[int, str] | None:
        """The sentinel port and data of the first message on ``channel``."""
        return next(((p, d) for p, c, d in self.heard if c == channel), None)

    async def close(self) -> None:
        """Stop listening (a paused Sentinel's connection is simply dropped)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.aclose()


@pytest.mark.chaos
async def test_the_client_reaches_the_promoted_replica_before_any_sentinel_switches() -> None:
    """Once the failover leader has selected the replica to promote, the two other
    Sentinels are frozen (they cannot adopt the promotion or publish +switch-master), and
    so is the replica it did not select (its reconfiguration hangs, so the leader's own
    failover does not end before that replica is down, 3 s later, and the leader keeps
    listing the old primary as down in SENTINEL MASTERS). Only the leader's
    GET-MASTER-ADDR-BY-NAME names the promoted replica: redis-py's discovery finds no
    primary at all there; this one must reach it."""
    group = ReplicaSet(down_after_ms=3000, failover_timeout_ms=10000)
    await asyncio.to_thread(group.start)
    client = connect(RedisTarget(group.url, sentinels=group.sentinel_addresses), socket_timeout=0.3)
    watch = watch_switches(client)
    assert watch is not None
    watching = asyncio.create_task(watch.listen())
    events = _Events(group, ("+selected-slave", "+promoted-slave", "+switch-master"))
    try:
        await client.set("before", "1")
        await client.wait(2, 2000)
        await wait_for(lambda: watch.subscribed == 3, timeout=10, what="the watch subscribed")
        old = group.primary_port()
        group.by_port(old).kill()
        await wait_for(
            lambda: events.first("+selected-slave") is not None,
            timeout=30,
            what="a Sentinel leading the failover",
        )
        selected = events.first("+selected-slave")
        assert selected is not None
        leader_port, data = selected  # slave <ip>:<port> <ip> <port> @ mymaster <ip> <port>
        new = int(data.split()[3])
        for server in group.sentinels + group.servers:
            if server.port not in (leader_port, old, new):
                server.pause()
        assert events.first("+switch-master") is None  # nobody adopted it before the freeze
        # Retried as any process retries (each discovery waits out the frozen Sentinels'
        # 0.3 s timeout); no Sentinel lists the promoted replica as the master meanwhile.
        deadline = time.monotonic() + 20
        while True:
            try:
                await client.set("after", "1")
                break
            except (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError):
                assert time.monotonic() < deadline, "the client never reached the new primary"
                await asyncio.sleep(0.05)
        with redis.Redis(port=leader_port, socket_timeout=2) as leader:
            listed: Any = leader.sentinel_master(group.master)
            assert int(listed["port"]) == old, listed  # it has not listed the new one
        assert events.first("+switch-master") is None, events.heard
        with redis.Redis(port=new, socket_timeout=2) as direct:
            assert direct.get("after") == b"1"
            assert direct.get("before") == b"1"
            assert direct.info("replication")["role"] == "master"
        promoted = events.first("+promoted-slave")
        assert promoted is not None and promoted[0] == leader_port
        # The watch heard the promotion too: it wakes the elector (streams.sentinel_watch).
        assert watch.primary == ("127.0.0.1", new)
    finally:
        for server in group.sentinels + group.servers:
            server.resume()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await events.close()
        await client.aclose()
        await asyncio.to_thread(group.stop)


def _discovery(**primary_kwargs: Any) -> SentinelDiscovery:
    """A discovery with no Sentinel: only its choice and its role check are used."""
    return SentinelDiscovery(
        [],
        sentinel_kwargs={},
        primary_class=redis.asyncio.connection.Connection,
        primary_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1, **primary_kwargs},
    )


async def test_discovery_never_takes_an_address_that_is_not_a_master(
    replica_set: ReplicaSet,
) -> None:
    primary = ("127.0.0.1", replica_set.primary_port())
    replica = next(("127.0.0.1", s.port) for s in replica_set.servers if s.port != primary[1])
    dead = ("127.0.0.1", free_port())
    discovery = _discovery()
    assert await discovery.role(primary) == "master"
    assert await discovery.role(replica) == "replica"
    assert await discovery.role(dead) is None
    # A newer epoch naming a replica (a stale or wrong promotion) loses to the master.
    assert (
        await discovery.choose(
            [Answer(replica, epoch=9, promoted=True), Answer(primary, epoch=1, listed_up=True)]
        )
        == primary
    )
    # A replica is never taken, even listed up by every Sentinel and nothing else named.
    assert await discovery.choose([Answer(replica, epoch=3, listed_up=True)] * 3) is None
    # A promoted address that cannot be reached is not taken unverified...
    assert await discovery.choose([Answer(dead, epoch=2, promoted=True)]) is None
    # ...one a Sentinel lists up is (as redis-py would: the connect then fails, retried).
    assert await discovery.choose([Answer(dead, epoch=0, listed_up=True)]) == dead
    assert await discovery.choose([Answer(dead, epoch=0, listed_up=True)], fallback=False) is None
    # A master a Sentinel lists as down is not even tried: only what it lists up or promoted.
    assert await discovery.choose([Answer(primary, epoch=5)]) is None
    # Two masters (an old primary back from a freeze, not yet demoted): the newer epoch.
    other = replica_set.by_port(replica[1])
    with redis.Redis(port=other.port) as direct:
        direct.replicaof("NO", "ONE")
    try:
        await wait_for(
            lambda: _is_master(other.port), timeout=5, what="the replica promoted by hand"
        )
        old, new = Answer(primary, epoch=1, listed_up=True), Answer(replica, 2, promoted=True)
        assert await discovery.choose([old, new]) == replica
        old, new = Answer(primary, epoch=2, listed_up=True), Answer(replica, 1, promoted=True)
        assert await discovery.choose([old, new]) == primary
    finally:
        with redis.Redis(port=other.port) as direct:
            direct.replicaof("127.0.0.1", primary[1])


def _is_master(port: int) -> bool:
    with redis.Redis(port=port) as direct:
        info: Any = direct.info("replication")
        return bool(info["role"] == "master")


async def test_the_role_check_needs_no_acl_grant(replica_set: ReplicaSet) -> None:
    """HELLO answers any authenticated user: a role with neither ROLE nor INFO granted
    (the prober's, say) can still verify a promoted replica."""
    port = replica_set.primary_port()
    with redis.Redis(port=port) as admin:
        admin.acl_setuser("checker", enabled=True, passwords=["+pw"], commands=["+ping"])
    with (
        redis.Redis(port=port, username="checker", password="pw") as user,
        pytest.raises(rex.NoPermissionError),
    ):
        user.execute_command("ROLE")
    checked = _discovery(username="checker", password="pw")
    assert await checked.role(("127.0.0.1", port)) == "master"
    wrong = _discovery(username="checker", password="nope")
    assert await wrong.role(("127.0.0.1", port)) is None
