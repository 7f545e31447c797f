"""The fenced commit against a real Redis: all or nothing, fenced, idempotent, safe trimming."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from schemas.codec import decode_entry, encode_data
from schemas.events import DeadLetter, FailoverDecision, LeaderChanged
from streams.commit import FENCED, Batch, Committed, Committer
from streams.group import ConsumerGroup
from streams.keys import GROUP, Keys
from streams.lease import Acquired, Lease
from tests.group_reads import read_entries


async def _lead(redis: aioredis.Redis, keys: Keys, owner: str) -> tuple[ConsumerGroup, Committer]:
    await redis.delete(keys.leader)
    result = await Lease(redis, keys, owner, 30_000).acquire()
    assert isinstance(result, Acquired)
    group = ConsumerGroup(redis, keys, owner, result.epoch)
    await group.ensure()
    return group, Committer(redis, keys, owner, result.epoch)


async def _fill(redis: aioredis.Redis, group: ConsumerGroup, n: int) -> tuple[list[bytes], ...]:
    """Add ``n`` entries to each input stream and read them: pending for ``group``."""
    for stream in group.streams:
        for i in range(n):
            await redis.xadd(stream, {b"data": str(i).encode()})
    got = await read_entries(group, [0, 1], n)
    assert got is not FENCED
    return tuple([e.entry_id for e in entries] for entries in got)


def _decision(epoch: int, n: int) -> bytes:
    return encode_data(
        FailoverDecision(
            decision_id=f"d{n}",
            epoch=epoch,
            leader="a#1",
            from_region="eu",
            to_region="us",
            reason="test",
            evidence=[f"e{n}"],
            decided_at=1_700_000_000.0 + n,
        )
    )


def _letter(n: int) -> bytes:
    return encode_data(
        DeadLetter(stream="s", entry_id=f"1-{n}", reason="bad", deliveries=1, raw=[("a", "b")])
    )


async def _pending_count(redis: aioredis.Redis, stream: str) -> int:
    summary = await redis.xpending(stream, GROUP)
    count: int = summary["pending"]
    return count


async def test_commit_writes_state_decisions_dead_letters_and_acks_together(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group, committer = await _lead(redis_client, keys, "a#1")
    health, events = await _fill(redis_client, group, 3)
    leader = encode_data(LeaderChanged(epoch=committer.epoch, leader="a#1", at=1.0))
    batch = Batch(
        state={"policy": b"P", "summary": b"S"},
        decisions=[leader, _decision(committer.epoch, 1)],
        dead_letters=[_letter(1)],
        acks={0: health[:2], 1: events},
    )
    result = await committer.commit(batch, committer.next_token())
    assert isinstance(result, Committed)
    assert result.acked == 5
    state = await redis_client.hgetall(keys.state)
    assert state[b"policy"] == b"P" and state[b"summary"] == b"S"
    decisions = await redis_client.xrange(keys.decisions)
    assert [i.decode() for i, _ in decisions] == result.decision_ids
    first = decode_entry(decisions[0][1], stream="decisions")
    assert first == LeaderChanged(epoch=committer.epoch, leader="a#1", at=1.0)
    dlq = await redis_client.xrange(keys.dlq)
    assert [i.decode() for i, _ in dlq] == result.dead_letter_ids
    assert await _pending_count(redis_client, keys.health) == 1
    assert await _pending_count(redis_client, keys.events) == 0


async def test_fenced_commit_writes_nothing(redis_client: aioredis.Redis, keys: Keys) -> None:
    group, old = await _lead(redis_client, keys, "a#1")
    health, events = await _fill(redis_client, group, 2)
    await redis_client.hset(keys.state, mapping={"policy": b"before"})
    batch = Batch(
        state={"policy": b"after"},
        decisions=[_decision(old.epoch, 1)],
        dead_letters=[_letter(1)],
        acks={0: health, 1: events},
    )
    await redis_client.delete(keys.leader)  # lease expired, nobody holds it
    assert await old.commit(batch, old.next_token()) is FENCED
    _, new = await _lead(redis_client, keys, "b#2")  # a newer epoch
    assert await old.commit(batch, old.next_token()) is FENCED
    # Same owner name under a newer epoch does not revive the old term either.
    _, again = await _lead(redis_client, keys, "a#1")
    assert again.epoch > new.epoch
    assert await old.commit(batch, old.next_token()) is FENCED
    assert await redis_client.hgetall(keys.state) == {b"policy": b"before"}
    assert await redis_client.exists(keys.decisions, keys.dlq) == 0
    assert await _pending_count(redis_client, keys.health) == 2
    assert await _pending_count(redis_client, keys.events) == 2


async def test_a_retried_commit_is_applied_once(redis_client: aioredis.Redis, keys: Keys) -> None:
    group, committer = await _lead(redis_client, keys, "a#1")
    health, _ = await _fill(redis_client, group, 2)
    batch = Batch(
        state={"policy": b"P"}, decisions=[_decision(committer.epoch, 1)], acks={0: health}
    )
    token = committer.next_token()
    first = await committer.commit(batch, token)
    second = await committer.commit(batch, token)  # as if the first reply had been lost
    assert isinstance(first, Committed) and first.acked == 2
    # The retry writes nothing and names the entries the first attempt wrote.
    assert isinstance(second, Committed) and second.acked == 0
    assert second.decision_ids == first.decision_ids and len(first.decision_ids) == 1
    assert await redis_client.xlen(keys.decisions) == 1
    third = await committer.commit(batch, committer.next_token())
    assert isinstance(third, Committed) and third.acked == 0  # already acked by the first
    assert third.decision_ids != first.decision_ids
    assert await redis_client.xlen(keys.decisions) == 2


async def test_commit_refuses_before_writing_when_a_key_has_the_wrong_type(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group, committer = await _lead(redis_client, keys, "a#1")
    health, _ = await _fill(redis_client, group, 2)
    await redis_client.set(keys.dlq, "not a stream")
    batch = Batch(
        state={"policy": b"P"},
        decisions=[_decision(committer.epoch, 1)],
        dead_letters=[_letter(1)],
        acks={0: health},
    )
    with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
        await committer.commit(batch, committer.next_token())
    assert await redis_client.exists(keys.state, keys.decisions) == 0
    assert await _pending_count(redis_client, keys.health) == 2


async def test_commit_acks_a_batch_larger_than_the_lua_stack(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group, committer = await _lead(redis_client, keys, "a#1")
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(9000):
            pipe.xadd(keys.health, {b"data": str(i).encode()})
        await pipe.execute()
    got = await read_entries(group, [0], 9000)
    assert got is not FENCED
    ids = [e.entry_id for e in got[0]]
    result = await committer.commit(Batch(acks={0: ids}), committer.next_token())
    assert isinstance(result, Committed) and result.acked == 9000
    assert await _pending_count(redis_client, keys.health) == 0


async def test_trimming_bounds_the_streams_when_nobody_consumes_them(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    _, committer = await _lead(redis_client, keys, "a#1")
    committer.decisions_maxlen = 50
    committer.dlq_maxlen = 20
    for n in range(40):
        batch = Batch(
            decisions=[_decision(committer.epoch, 10 * n + k) for k in range(10)],
            dead_letters=[_letter(n)] * 5,
        )
        assert isinstance(await committer.commit(batch, committer.next_token()), Committed)
    # Approximate (MAXLEN ~): never below the limit, at most about one stream node above it.
    assert 50 <= await redis_client.xlen(keys.decisions) <= 50 + 110
    assert 20 <= await redis_client.xlen(keys.dlq) <= 20 + 110
    newest = await redis_client.xrevrange(keys.decisions, count=1)
    assert decode_entry(newest[0][1], stream="decisions") == decode_entry(
        {b"data": _decision(committer.epoch, 399)}, stream="decisions"
    )


async def test_trimming_never_drops_entries_a_group_still_needs(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    _, committer = await _lead(redis_client, keys, "a#1")
    committer.decisions_maxlen = 5
    await redis_client.xgroup_create(keys.decisions, "executor", id="0", mkstream=True)

    async def commit(n: int) -> list[str]:
        batch = Batch(decisions=[_decision(committer.epoch, n + k) for k in range(10)])
        result = await committer.commit(batch, committer.next_token())
        assert isinstance(result, Committed)
        return result.decision_ids

    written = await commit(0)
    # The executor takes 4 entries and acks 2: two stay pending, six are undelivered.
    taken = await redis_client.xreadgroup("executor", "x1", {keys.decisions: ">"}, count=4)
    taken_ids = [i for i, _ in taken[0][1]]
    await redis_client.xack(keys.decisions, "executor", *taken_ids[:2])
    for n in range(1, 30):
        written += await commit(10 * n)
    left = [i.decode() for i, _ in await redis_client.xrange(keys.decisions)]
    assert written[2] == left[0]  # the oldest pending entry is still there, and all after it
    assert left == written[2:]
    # Once the executor has everything and acked it, trimming catches up.
    while True:
        more = await redis_client.xreadgroup("executor", "x1", {keys.decisions: ">"}, count=500)
        if not more:
            break
        await redis_client.xack(keys.decisions, "executor", *[i for i, _ in more[0][1]])
    await redis_client.xack(keys.decisions, "executor", *taken_ids[2:])
    for n in range(30, 45):
        written += await commit(10 * n)
    length = await redis_client.xlen(keys.decisions)
    assert length < len(written) - 100
    left = [i.decode() for i, _ in await redis_client.xrange(keys.decisions)]
    assert left == written[-length:]


class _ThreeInputs(Keys, frozen=True):
    """A namespace with a third input stream: the commit takes any number."""

    @property
    def input_streams(self) -> tuple[str, str, str]:  # type: ignore[override]
        return (self.health, self.events, f"{self.namespace}:extra")


async def test_commit_acks_on_any_number_of_input_streams(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    three = _ThreeInputs(keys.namespace)
    await redis_client.delete(three.leader)
    lease = await Lease(redis_client, three, "a#1", 30_000).acquire()
    assert isinstance(lease, Acquired)
    ids: dict[int, list[bytes]] = {}
    for index, stream in enumerate(three.input_streams):
        await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        for i in range(index + 1):
            await redis_client.xadd(stream, {b"data": str(i).encode()})
        got = await redis_client.xreadgroup(GROUP, "a#1", {stream: ">"})
        ids[index] = [entry_id for entry_id, _ in got[0][1]]
    committer = Committer(redis_client, three, "a#1", lease.epoch)
    result = await committer.commit(Batch(acks=ids), committer.next_token())
    assert isinstance(result, Committed) and result.acked == 1 + 2 + 3
    for stream in three.input_streams:
        assert await _pending_count(redis_client, stream) == 0
    with pytest.raises(ValueError, match="unknown input streams"):
        await committer.commit(Batch(acks={3: [b"1-0"]}), committer.next_token())


async def test_a_retried_commit_whose_entries_are_gone_names_none(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    _, committer = await _lead(redis_client, keys, "a#1")
    batch = Batch(decisions=[_decision(committer.epoch, 1)], dead_letters=[_letter(1)])
    token = committer.next_token()
    first = await committer.commit(batch, token)
    assert isinstance(first, Committed) and len(first.dead_letter_ids) == 1
    again = await committer.commit(batch, token)
    assert isinstance(again, Committed)
    assert (again.decision_ids, again.dead_letter_ids) == (
        first.decision_ids,
        first.dead_letter_ids,
    )
    await redis_client.xdel(keys.decisions, *first.decision_ids)
    await redis_client.xadd(keys.dlq, {b"data": b"someone else's"})
    gone = await committer.commit(batch, token)
    assert gone == Committed(decision_ids=[], dead_letter_ids=[], acked=0)
    assert await redis_client.xlen(keys.decisions) == 0  # still not written twice
