"""Redis Cluster pieces on their own: the hash-tag rule, telling a cluster from a single
server, blocking reads, step-down messages and the fleet index, each on both."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from schemas.errors import ConfigError
from schemas.members import Heartbeat
from streams.cluster import check_namespace, hash_tag, server_mode
from streams.cluster_set import ClusterSet
from streams.connection import connect
from streams.decisions import DecisionsReader
from streams.keys import Keys
from streams.members import list_members, write_heartbeat
from streams.notifications import ReleaseNotifications, publish_step_down
from streams.server import RedisServer


@pytest.mark.parametrize(
    ("namespace", "tag"),
    [
        ("{failover}", "failover"),
        ("prod{eu}", "eu"),
        ("{a}{b}", "a"),  # the first tag counts, as Redis reads it
        ("failover", None),
        ("{}failover", None),  # an empty tag hashes the whole key
        ("fail{over", None),  # not closed inside the namespace: the key's rest would decide
        ("fail}{over", None),
    ],
)
def test_hash_tag_follows_redis_rule(namespace: str, tag: str | None) -> None:
    assert hash_tag(namespace) == tag


def test_every_key_of_a_tagged_namespace_shares_one_slot() -> None:
    keys = Keys("{failover}")
    names = [
        *(keys.health, keys.events, keys.decisions, keys.dlq, keys.leader, keys.epoch),
        *(keys.state, keys.members, keys.members_last, keys.member("x#}{1")),
        *(keys.read_guard("a#1"), keys.executor("g"), keys.executor_order("g")),
        keys.region_health("eu"),
    ]
    assert {ClusterSet.slot(name) for name in names} == {ClusterSet.slot("{failover}")}


async def test_server_mode_and_the_namespace_check(
    redis_server: RedisServer, redis_cluster: ClusterSet
) -> None:
    single, cluster = connect(redis_server.url), connect(redis_cluster.url)
    try:
        assert await server_mode(single) == "standalone"
        assert await server_mode(cluster) == "cluster"
        await check_namespace(single, "failover")  # no slots on a single server
        await check_namespace(cluster, "{failover}")
        with pytest.raises(ConfigError, match=r"^FAILOVER_NAMESPACE: .*hash tag.*'failover'"):
            await check_namespace(cluster, "failover")
    finally:
        await single.aclose()
        await cluster.aclose()


async def test_a_blocking_read_waits_on_the_owner(any_redis_url: str, keys: Keys) -> None:
    writer, follower = connect(any_redis_url), connect(any_redis_url)
    try:
        await writer.xadd(keys.decisions, {b"data": b"first"})
        reader = DecisionsReader(follower, keys)
        (first,) = await reader.follow("0")
        waiting = asyncio.create_task(reader.follow(first[0].decode(), block_ms=5000))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked, on the node that will see the entry
        await writer.xadd(keys.decisions, {b"data": b"second"})
        (second,) = await asyncio.wait_for(waiting, timeout=5)
        assert second[1] == {b"data": b"second"}
    finally:
        await writer.aclose()
        await follower.aclose()


async def test_step_down_reaches_the_listener(any_redis_url: str, keys: Keys) -> None:
    listener_client, publisher = connect(any_redis_url), connect(any_redis_url)
    notes = ReleaseNotifications(listener_client, keys, owner="me#1")
    listening = asyncio.create_task(notes.listen())
    try:
        await asyncio.wait_for(notes.subscribed.wait(), timeout=5)
        assert await publish_step_down(publisher, keys, "me#1") >= 1
        await asyncio.wait_for(notes.step_down.wait(), timeout=5)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await listener_client.aclose()
        await publisher.aclose()


async def test_heartbeats_and_the_fleet_index(any_redis_url: str, keys: Keys) -> None:
    client = connect(any_redis_url)
    beat = Heartbeat(
        role="prober",
        instance="p1",
        owner="p1#abc",
        pid=1,
        host="h",
        version="v",
        started_at=1.0,
        at=2.0,
        interval_ms=1000,
        leader="",
        epoch=0,
    )
    try:
        await write_heartbeat(client, keys, beat)  # one MULTI over three keys of the slot
        (member,) = await list_members(client, keys, now_ms=2_000)
        assert member.heartbeat == beat and member.alive
    finally:
        await client.aclose()


async def test_hello_needs_no_acl_grant(redis_server: RedisServer) -> None:
    user = "hello-" + uuid.uuid4().hex[:8]
    admin = connect(redis_server.url)
    await admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "resetkeys", "-@all")
    limited = connect(f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0")
    try:
        assert await server_mode(limited) == "standalone"  # every role can be checked
    finally:
        await limited.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()
