"""Issue 9, finding 5: no entry size can stall the streams, bloat a dead letter or the leader.

An entry over ``FAILOVER_MAX_ENTRY_BYTES`` never leaves Redis whole: the leader gets a
summary (first 1024 bytes of each part, size) and hashes the rest in slices; its dead letter
is ``entry too large: N bytes`` with ``raw_truncated``, ``raw_bytes`` and ``raw_sha256``.
Every dead letter stays under 128 KiB whatever the entry.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import redis.asyncio as aioredis

from schemas.codec import (
    DEAD_LETTER_MAX_BYTES,
    Oversize,
    cut_fields,
    decode_entry,
    encode_data,
    fields_from_raw,
    pairs,
)
from schemas.events import DeadLetter, HealthEvent
from streams.connection import connect
from streams.group import ZERO_ID, ConsumerGroup, ensure_group
from streams.keys import GROUP, Keys
from streams.server import RedisServer
from tests.pipeline_helpers import (
    backlog,
    dead_letters,
    eventually,
    failovers,
    health,
    settings_for,
    start_term,
    take_lease,
)
from tests.worker_process import WorkerProcess
from workers.ops.dlq import replay_dead_letters

MIB = 1024 * 1024


def _sha(flat: list[bytes]) -> str:
    return hashlib.sha256(b"".join(flat)).hexdigest()


async def _caught_up(redis: aioredis.Redis, keys: Keys, timeout: float = 30.0) -> None:
    async def done() -> bool:
        return await backlog(redis, keys) == 0

    await eventually(done, timeout, what="every entry committed")


async def _letters_by_id(redis: aioredis.Redis, keys: Keys) -> dict[str, tuple[int, DeadLetter]]:
    """Each dead letter by its entry id, with the size of its encoded ``data``."""
    out = {}
    for _, fields in await redis.xrange(keys.dlq):
        letter = decode_entry(fields, stream="dlq")
        assert isinstance(letter, DeadLetter)
        out[letter.entry_id] = (len(fields[b"data"]), letter)
    return out


# Entries built to make the largest dead letters: control bytes JSON-escape to 6 characters,
# non-UTF-8 goes base64, many fields add per-pair overhead.
HOSTILE: dict[str, list[bytes]] = {
    "binary 200 KB": [b"data", b"\xff" * 200_000],
    "control bytes 60 KB (within the limit)": [b"data", b"\x01" * 60_000],
    "50 fields of 10 KB": [p for i in range(50) for p in (b"f%d" % i, b"\x01" * 10_000)],
    "a 100 KB field name": [b"n" * 100_000, b"v"],
    "4000 tiny fields": [p for i in range(4000) for p in (b"k%d" % i, b"\x02" * 8)],
}


async def test_finding_5_oversize_entries_are_truncated_dead_letters_under_128_kib(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings)
    written: dict[str, str] = {}
    try:
        for name, flat in HOSTILE.items():
            entry_id = await redis_client.execute_command("XADD", keys.health, "*", *flat)
            written[entry_id.decode()] = name
        good = await redis_client.xadd(keys.health, health("g", "eu", "o1", "healthy", 1e9))
        await _caught_up(redis_client, keys)
        assert not term.task.done()
    finally:
        await term.stop()
    letters = await _letters_by_id(redis_client, keys)
    assert sorted(letters) == sorted(written)
    assert good.decode() not in letters
    for entry_id, (size, letter) in letters.items():
        name = written[entry_id]
        flat = HOSTILE[name]
        total = sum(map(len, flat))
        assert size < DEAD_LETTER_MAX_BYTES, (name, size)
        assert letter.raw_truncated, name
        assert letter.raw_bytes == total, name
        assert letter.raw_sha256 == _sha(flat), name
        assert fields_from_raw(letter.raw, letter.raw_encoding) == pairs(cut_fields(flat)), name
        if total > settings.max_entry_bytes:
            assert letter.reason == (
                f"entry too large: {total} bytes (FAILOVER_MAX_ENTRY_BYTES=65536)"
            ), name
    # A truncated dead letter cannot be put back: it is not the entry any more.
    (dlq_id, _), *_ = await redis_client.xrange(keys.dlq, count=1)
    (outcome,) = await replay_dead_letters(redis_client, keys, [dlq_id.decode()], deadline_s=2)
    assert outcome.result == "invalid" and "cannot be replayed" in (outcome.reason or "")


async def test_finding_5_an_oversize_entry_never_reaches_the_leader_whole(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # The group read itself (new entries, a retried read's history, a claim) hands out
    # only summaries of oversize entries.
    await ensure_group(redis_client, keys)
    big = [b"data", b"x" * 300_000, b"extra", b"y" * 2000]
    small = [b"data", b"ok"]
    big_id = await redis_client.execute_command("XADD", keys.health, "*", *big)
    small_id = await redis_client.execute_command("XADD", keys.health, "*", *small)
    leadership = await take_lease(redis_client, keys, "leader#1")
    group = ConsumerGroup(redis_client, keys, "leader#1", leadership.epoch, max_entry_bytes=65536)
    first = await group.read_raw([0, 1], 10)
    expected = Oversize(cut_fields(big), sum(map(len, big)), _sha(big))
    assert not isinstance(first, type(None))
    assert [e[0] for e in first.entries[0]] == [big_id, small_id]  # type: ignore[union-attr]
    assert first.entries[0][0][1] == expected  # type: ignore[union-attr]
    assert first.entries[0][1][1] == small  # type: ignore[union-attr]
    # A retry after a lost reply reads our pending entries again: summaries again.
    again = await group.read_raw([0, 1], 10, after=[ZERO_ID, ZERO_ID])
    assert again.entries[0][0][1] == expected  # type: ignore[union-attr]
    assert again.redelivered[0] == [big_id, small_id]  # type: ignore[union-attr]
    # A new leader claims them: summaries again.
    leadership = await take_lease(redis_client, keys, "leader#2")
    heir = ConsumerGroup(redis_client, keys, "leader#2", leadership.epoch, max_entry_bytes=65536)
    page = await heir.claim(0, ZERO_ID, 10)
    assert [e.fields for e in page.entries] == [expected, small]  # type: ignore[union-attr]
    # Nothing whole was ever handed out: the only full copy is the stream's.
    assert await redis_client.xlen(keys.health) == 2
    assert await redis_client.xpending(keys.health, GROUP)


async def test_finding_5_large_allowed_entries_are_read_within_a_byte_budget_in_order(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    # 150 entries of ~60 KB are 9 MB: more than one read's budget, all valid, all applied.
    settings = settings_for(redis_server.url, keys.namespace, threshold=150)
    pad = "p" * 60_000
    t0 = time.time() - 10
    for region in ("us", "ap"):
        for i in range(3):
            await redis_client.xadd(
                keys.health, health(f"{region}{i}", region, "o1", "healthy", t0 + i / 1000)
            )
    for i in range(150):
        event = HealthEvent(f"e{i}", "eu", "o1", "unhealthy", t0 + i / 100, detail=pad)
        await redis_client.xadd(keys.health, {b"data": encode_data(event)})
    term = await start_term(redis_client, keys, settings)
    try:
        await _caught_up(redis_client, keys)
    finally:
        await term.stop()
    assert term.pipeline.stats.applied == 156
    assert term.pipeline.stats.dead_letters == 0
    (decision,) = await failovers(redis_client, keys)
    assert decision.evidence == [f"e{i}" for i in range(150)]  # all of them, in order


async def test_finding_5_proto_max_bulk_len_2mb_and_a_binary_entry_of_1_9_mb(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    # Its base64 dead letter used to be over the bulk limit: the commit failed forever.
    client = connect(own_redis_server.url)
    try:
        await client.config_set("proto-max-bulk-len", str(2 * MIB))
        settings = settings_for(own_redis_server.url, keys.namespace)
        term = await start_term(client, keys, settings)
        try:
            blob = bytes(range(256)) * (1_900_000 // 256)
            await client.execute_command("XADD", keys.events, "*", "data", blob)
            await client.xadd(keys.health, health("g", "eu", "o1", "healthy", 1e9))
            await _caught_up(client, keys)
            assert not term.task.done()
        finally:
            await term.stop()
        (letter,) = await dead_letters(client, keys)
        assert letter.raw_truncated and letter.raw_bytes == len(blob) + 4
        assert term.pipeline.stats.applied == 1  # and the good entry after it
    finally:
        await client.aclose()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_finding_5_leader_memory_stays_bounded_with_huge_entries(
    own_redis_server: RedisServer, keys: Keys, workers: list[WorkerProcess]
) -> None:
    # The figures: 200 entries of 1 MB took the leader to 915 MB; one 88 MB entry
    # stalled the stream. DESIGN: under 300 MiB RSS whatever the entry sizes.
    # Writing 88 MB can take longer than the default 2 s socket timeout on a loaded host.
    client = connect(own_redis_server.url, socket_timeout=30)
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "FAILOVER_REDIS_URL": own_redis_server.url,
            "FAILOVER_NAMESPACE": keys.namespace,
            "FAILOVER_REGIONS": "eu,us,ap",
            "FAILOVER_INSTANCE_ID": "big",
        }
        leader = WorkerProcess("workers.coordinator", env, name="big-entries").start()
        workers.append(leader)

        async def leading() -> bool:
            return await client.exists(keys.leader) == 1

        await eventually(leading, 15, what="a leader")
        megabyte = b"\x01" * MIB
        for _ in range(200):
            await client.execute_command("XADD", keys.health, "*", "data", megabyte)
        await client.execute_command("XADD", keys.events, "*", "data", b"z" * (88 * MIB))
        observed = HealthEvent("after", "eu", "o1", "healthy", time.time())
        await client.xadd(keys.health, {b"data": encode_data(observed)})
        await _caught_up(client, keys, timeout=120)
        assert leader.proc is not None and leader.proc.poll() is None, leader.output()
        peak = _peak_rss_mib(leader.proc.pid)
        print(f"leader peak RSS {peak:.0f} MiB after 200 x 1 MiB and 1 x 88 MiB")
        assert peak < 300, peak
        assert await client.xlen(keys.dlq) == 201
    finally:
        await client.aclose()
