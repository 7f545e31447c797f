"""Issue 9: a property-based fuzz of a running leader (a real coordinator process, real Redis).

Hypothesis writes arbitrary entries to both input streams: arbitrary field maps with and
without ``data``, extra fields, arbitrary bytes, oversize values, event-shaped JSON with
times far in the past and future, and explicit ids (``0-1``, ``<ms>-(2^64-1)``, far-future
milliseconds). Afterwards: the coordinators never exited, the group is drained (every entry
was acked: applied, or dead-lettered by the same commit), no entry was dead-lettered twice,
and no decision was made from them (event-shaped entries name regions the fleet does not
have, so only a bug could turn them into a decision).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import decode_entry
from schemas.events import DeadLetter, LeaderChanged
from streams.keys import GROUP, Keys
from streams.server import RedisServer
from tests.waiting import wait_for_sync
from tests.worker_process import ROOT, WorkerProcess

NAMESPACE = "{fuzz}"
KEYS = Keys(NAMESPACE)
MAX_SEQ = 2**64 - 1
YEAR_MS = 365 * 86_400_000

_text = st.text(max_size=40)
_times = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=1e10),
    st.just(time.time() + 10 * 365 * 86400),  # far future
    st.just(1.0),  # far past
    st.integers(min_value=-(2**70), max_value=2**70),
)
# Event-shaped JSON about regions the fleet does not have ("zz-..."), some fields wrong.
_shaped = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["health", "manual_failover", "drain", "restore", "failover_completed", "bogus"]
        ),
        "event_id": _text,
        "region": _text.map(lambda t: "zz-" + t),
        "target": _text.map(lambda t: "zz-" + t),
        "source": _text,
        "actor": _text,
        "status": st.sampled_from(["healthy", "unhealthy", "degraded", "sick"]),
        "observed_at": _times,
        "at": _times,
    },
    optional={"detail": st.one_of(_text, st.integers()), "extra": st.dictionaries(_text, _text)},
)
_name = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
# Valid events (regions the fleet does not have), so that extra fields, odd ids and clocks
# meet entries the leader really applies.
_valid = st.one_of(
    st.builds(
        lambda e, r, s, st_, t: {"type": "health", "event_id": e, "region": "zz-" + r,
                                 "source": s, "status": st_, "observed_at": t},
        _name, _name, _name, st.sampled_from(["healthy", "unhealthy", "degraded"]),
        st.floats(min_value=0, max_value=time.time() + 60),
    ),
    st.builds(
        lambda kind, e, r, a, t: {"type": kind, "event_id": e, "region": "zz-" + r,
                                  "actor": a, "at": t, "target": "zz-t"},
        st.sampled_from(["manual_failover", "drain", "restore", "failover_failed"]),
        _name, _name, _name, st.floats(min_value=0, max_value=time.time() + 60),
    ),
)  # fmt: skip
_value = st.one_of(
    st.binary(max_size=200),
    _valid.map(lambda d: json.dumps(d).encode()),
    _valid.map(lambda d: json.dumps(d).encode()),
    _shaped.map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=65_000, max_value=300_000).map(lambda n: b"\x01" * n),  # oversize
)
_fields = st.lists(
    st.tuples(st.one_of(st.just(b"data"), st.binary(min_size=1, max_size=20)), _value),
    min_size=1,
    max_size=4,
)
_ids = st.one_of(
    st.just("*"),
    st.just("*"),
    st.just("0-1"),
    st.integers(min_value=0, max_value=2**64 - 1).map(lambda seq: f"{{ms}}-{seq}"),
    st.just(f"{{ms}}-{MAX_SEQ}"),
    st.just(f"{{future}}-{MAX_SEQ}"),
)
_entry = st.tuples(st.sampled_from([KEYS.health, KEYS.events]), _ids, _fields)


def _backlog(r: redis.Redis) -> int:
    total = 0
    for stream in KEYS.input_streams:
        for g in r.xinfo_groups(stream):
            if g["name"] == GROUP.encode():
                total += int(g["lag"] or 0) + int(g["pending"])
    return total


def _alive(fleet: list[WorkerProcess]) -> None:
    for w in fleet:
        assert w.proc is not None and w.proc.poll() is None, w.output()


def test_fuzz_hostile_entries_never_stop_or_mislead_the_leader(
    own_redis_server: RedisServer, workers: list[WorkerProcess]
) -> None:
    r = redis.Redis.from_url(own_redis_server.url)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "FAILOVER_REDIS_URL": own_redis_server.url,
        "FAILOVER_NAMESPACE": NAMESPACE,
        "FAILOVER_REGIONS": "eu,us,ap",
        "FAILOVER_LEASE_TTL_MS": "1000",
        "FAILOVER_TICK_MS": "100",
        "FAILOVER_INPUT_RETENTION_MS": "1",  # trims run all the time, over every id
        "FAILOVER_STALE_AFTER_MS": "86400000",  # no decision from time passing either
    }
    for name in ("f1", "f2"):
        fleet_env = {**env, "FAILOVER_INSTANCE_ID": name}
        workers.append(WorkerProcess("workers.coordinator", fleet_env, name).start())
    wait_for_sync(lambda: r.exists(KEYS.leader) == 1, 20, "a leader")
    written: list[tuple[str, bytes]] = []

    @settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(_entry, min_size=1, max_size=5))
    def write(entries: list[tuple[str, str, list[tuple[bytes, bytes]]]]) -> None:
        now_ms = int(time.time() * 1000)
        for stream, id_template, fields in entries:
            entry_id = id_template.format(ms=now_ms, future=now_ms + YEAR_MS)
            flat: list[Any] = [part for pair in fields for part in pair]
            try:
                got = r.execute_command("XADD", stream, entry_id, *flat)
            except redis.ResponseError:  # an id Redis refuses (not above the stream's top)
                got = r.execute_command("XADD", stream, "*", *flat)
            written.append((stream, got))

    write()
    _alive(workers)
    wait_for_sync(lambda: _backlog(r) == 0, 60, "the group drained")
    _alive(workers)
    letters = []
    for _, fields in r.xrange(KEYS.dlq):
        letter = decode_entry(fields, stream="dlq")
        assert isinstance(letter, DeadLetter)
        assert len(fields[b"data"]) < 128 * 1024
        letters.append((letter.stream, letter.entry_id))
    assert len(letters) == len(set(letters)), "an entry was dead-lettered twice"
    assert set(letters) <= {(s, i.decode()) for s, i in written}
    decisions = [decode_entry(f, stream="decisions") for _, f in r.xrange(KEYS.decisions)]
    assert all(isinstance(d, LeaderChanged) for d in decisions), decisions
    assert len(written) >= 300
    print(f"fuzz: {len(written)} entries, {len(letters)} dead letters, {len(decisions)} decisions")
    r.close()


@pytest.mark.parametrize("explicit", ["0-1", f"{{ms}}-{MAX_SEQ}", "{future}-0"])
def test_each_explicit_id_shape_is_handled_on_a_fresh_stream(
    own_redis_server: RedisServer, workers: list[WorkerProcess], explicit: str
) -> None:
    # The fuzz can write `0-1` only onto an empty stream; here each shape comes first.
    r = redis.Redis.from_url(own_redis_server.url)
    keys = Keys("{ids}")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "FAILOVER_REDIS_URL": own_redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_REGIONS": "eu,us,ap",
        "FAILOVER_INPUT_RETENTION_MS": "1",
        "FAILOVER_TICK_MS": "100",
    }
    now_ms = int(time.time() * 1000)
    entry_id = explicit.format(ms=now_ms, future=now_ms + YEAR_MS)
    drain = {"type": "drain", "event_id": "d", "region": "zz", "actor": "a", "at": time.time()}
    for stream in keys.input_streams:
        r.execute_command("XADD", stream, entry_id, "data", json.dumps(drain))
        r.execute_command("XADD", stream, "*", "data", "junk")
    workers.append(WorkerProcess("workers.coordinator", env, "ids").start())

    def drained() -> bool:
        groups = [g for s in keys.input_streams for g in r.xinfo_groups(s)]
        backlog = sum(int(g["lag"] or 0) + int(g["pending"]) for g in groups)
        return len(groups) == 2 and backlog == 0

    wait_for_sync(drained, 20, "both streams drained")
    _alive(workers)
    # The junk twice and the drain on NS:health; at `0-1` the drain on NS:events too: its
    # id says it arrived in 1970, so its time is far ahead of its arrival (a clock letter).
    letters = [decode_entry(f, stream="dlq") for _, f in r.xrange(keys.dlq)]
    assert len(letters) == (4 if explicit == "0-1" else 3), letters
    r.close()
