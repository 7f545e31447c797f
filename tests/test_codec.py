"""schemas.codec: round trips, every decode error path, fuzzing: only DecodeError escapes."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    DATA_FIELD,
    MAX_DATA_BYTES,
    check_event_time,
    decode_data,
    decode_entry,
    encode_data,
    encode_entry,
    fields_from_raw,
    raw_from_fields,
)
from schemas.errors import DecodeError
from schemas.events import (
    AnyEntry,
    DeadLetter,
    Drain,
    FailoverCompleted,
    FailoverDecision,
    FailoverFailed,
    HealthEvent,
    LeaderChanged,
    ManualFailover,
    Restore,
)
from streams.keys import Keys

T0 = 1_700_000_000.25

# One full (every optional field set) and one minimal example of every entry type.
FULL: list[AnyEntry] = [
    HealthEvent("h-1", "eu", "probe-a", "unhealthy", T0, latency_ms=12.5, detail="timeout"),
    FailoverCompleted("e-1", "us", "dns-updater", T0, detail="ok", decision_id="d-1"),
    FailoverFailed("e-2", "us", "dns-updater", T0, detail="502", decision_id="d-1"),
    ManualFailover("e-3", "eu", "alice", T0, target="us", detail="maint", decision_id="d-0"),
    Drain("e-4", "ap", "bob", T0, detail="capacity", decision_id="d-9"),
    Restore("e-5", "ap", "bob", T0, detail="back", decision_id="d-9"),
    LeaderChanged(epoch=7, leader="coord-1#abc", at=T0),
    FailoverDecision("d-1", 7, "coord-1#abc", "eu", "us", "eu down", ["h-1", "h-2"], T0),
    DeadLetter("ns:health", "1-0", "bad json", 3, [("data", "{"), ("data", "x")], "utf-8"),
]
MINIMAL: list[AnyEntry] = [
    HealthEvent("h-1", "eu", "probe-a", "healthy", 0.0),
    FailoverCompleted("e-1", "us", "x", T0),
    FailoverFailed("e-2", "us", "x", T0),
    ManualFailover("e-3", "eu", "alice", T0, target="us"),
    Drain("e-4", "ap", "bob", T0),
    Restore("e-5", "ap", "bob", T0),
    LeaderChanged(epoch=1, leader="c", at=T0),
    FailoverDecision("d-1", 1, "c", "eu", "us", "", [], T0),
    DeadLetter("ns:events", "1-1", "r", 1, []),
]
STREAM_OF = {
    HealthEvent: "health",
    FailoverCompleted: "events",
    FailoverFailed: "events",
    ManualFailover: "events",
    Drain: "events",
    Restore: "events",
    LeaderChanged: "decisions",
    FailoverDecision: "decisions",
    DeadLetter: "dlq",
}
STREAMS = ("health", "events", "decisions", "dlq")
TAGS = [type(e).__struct_config__.tag for e in FULL]


def _obj(entry: AnyEntry) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(encode_data(entry))
    return result


def _decode_obj(obj: object, stream: str) -> AnyEntry:
    return decode_entry({DATA_FIELD: json.dumps(obj).encode()}, stream=stream)  # type: ignore[arg-type]


def _reason(obj: object, stream: str) -> str:
    with pytest.raises(DecodeError) as info:
        _decode_obj(obj, stream)
    assert info.value.reason == str(info.value) and info.value.reason
    return info.value.reason


@pytest.mark.parametrize("entry", FULL + MINIMAL, ids=[f"full-{t}" for t in TAGS] + TAGS)
def test_round_trip_every_type(entry: AnyEntry) -> None:
    stream = STREAM_OF[type(entry)]
    fields = encode_entry(entry)
    assert list(fields) == [b"data"]
    assert decode_entry(fields, stream=stream) == entry  # type: ignore[arg-type]
    assert decode_entry(list(fields.items()), stream=stream) == entry  # type: ignore[arg-type]
    assert decode_data(encode_data(entry)) == entry
    assert _obj(entry)["type"] == type(entry).__struct_config__.tag


def test_wire_names_match_the_contract() -> None:
    assert TAGS == [
        "health",
        "failover_completed",
        "failover_failed",
        "manual_failover",
        "drain",
        "restore",
        "leader_changed",
        "failover",
        "dead_letter",
    ]
    assert _obj(FULL[0]) == {
        "type": "health",
        "event_id": "h-1",
        "region": "eu",
        "source": "probe-a",
        "status": "unhealthy",
        "observed_at": T0,
        "latency_ms": 12.5,
        "detail": "timeout",
    }
    assert _obj(FULL[8])["raw"] == [["data", "{"], ["data", "x"]]


async def test_round_trip_through_a_real_stream(redis_client: aioredis.Redis, keys: Keys) -> None:
    for entry in FULL:
        await redis_client.xadd(keys.events, encode_entry(entry))  # type: ignore[arg-type]
    read = await redis_client.xrange(keys.events)
    assert [
        decode_entry(fields, stream=STREAM_OF[type(e)])  # type: ignore[arg-type]
        for (_, fields), e in zip(read, FULL, strict=True)
    ] == FULL


@pytest.mark.parametrize("entry", FULL, ids=TAGS)
def test_unknown_fields_are_ignored(entry: AnyEntry) -> None:
    obj = _obj(entry) | {"zz_new": {"nested": [1, 2, {"deep": None}]}, "version": 2}
    assert _decode_obj(obj, STREAM_OF[type(entry)]) == entry


def test_other_stream_fields_next_to_data_are_ignored() -> None:
    pairs = [(b"trace", b"abc"), (b"data", encode_data(FULL[0])), (b"\xff", b"\xfe")]
    assert decode_entry(pairs, stream="health") == FULL[0]


REQUIRED = [
    (tag, field.name)
    for entry, tag in zip(FULL, TAGS, strict=True)
    for field in msgspec.structs.fields(type(entry))
    if field.required
]


@pytest.mark.parametrize(("tag", "name"), REQUIRED, ids=[f"{t}.{n}" for t, n in REQUIRED])
def test_missing_required_field(tag: str, name: str) -> None:
    entry = FULL[TAGS.index(tag)]
    obj = _obj(entry)
    del obj[name]
    assert f"missing required field `{name}`" in _reason(obj, STREAM_OF[type(entry)])


def test_every_required_field_was_covered() -> None:
    assert len(REQUIRED) == 5 + 4 * 5 + 1 + 3 + 8 + 5  # health, 5 events (+target), decisions, dlq


# (tag, field, wrong value) -- wrongly typed values, optional fields included.
WRONG_TYPES = [
    ("health", "event_id", 5),
    ("health", "region", None),
    ("health", "source", ["a"]),
    ("health", "observed_at", "now"),
    ("health", "observed_at", True),
    ("health", "latency_ms", "12"),
    ("health", "detail", 5),
    ("failover_completed", "at", {}),
    ("failover_completed", "decision_id", 1),
    ("failover_failed", "actor", 1.5),
    ("manual_failover", "target", None),
    ("drain", "detail", []),
    ("restore", "region", False),
    ("leader_changed", "epoch", "7"),
    ("leader_changed", "epoch", 7.5),
    ("failover", "evidence", "h-1"),
    ("failover", "evidence", [1, 2]),
    ("failover", "reason", None),
    ("dead_letter", "deliveries", "3"),
    ("dead_letter", "raw", [["a"]]),
    ("dead_letter", "raw", [["a", 1]]),
]


@pytest.mark.parametrize(("tag", "name", "value"), WRONG_TYPES)
def test_wrongly_typed_field(tag: str, name: str, value: object) -> None:
    entry = FULL[TAGS.index(tag)]
    reason = _reason(_obj(entry) | {name: value}, STREAM_OF[type(entry)])
    assert reason.startswith("invalid event: ") and f"$.{name}" in reason, reason


# Values of the right JSON type but outside what the contract allows.
OUT_OF_RANGE = [
    ("health", "status", "dead"),
    ("health", "status", "Healthy"),
    ("health", "event_id", ""),
    ("health", "region", "x" * 257),
    ("health", "observed_at", -1),
    ("health", "observed_at", T0 * 1000),  # milliseconds sent as seconds
    ("health", "latency_ms", -0.5),
    ("manual_failover", "target", ""),
    ("failover_completed", "decision_id", ""),
    ("leader_changed", "epoch", 0),
    ("failover", "epoch", -3),
    ("dead_letter", "raw_encoding", "latin-1"),
]


@pytest.mark.parametrize(("tag", "name", "value"), OUT_OF_RANGE)
def test_value_outside_its_enum_or_range(tag: str, name: str, value: object) -> None:
    entry = FULL[TAGS.index(tag)]
    reason = _reason(_obj(entry) | {name: value}, STREAM_OF[type(entry)])
    assert reason.startswith("invalid event: ") and f"$.{name}" in reason, reason


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        ({"event_id": "x"}, "missing required field `type`"),
        ({"type": "heartbeat", "event_id": "x"}, "Invalid value 'heartbeat'"),
        ({"type": 3}, "Expected `str`"),
        ([1, 2], "Expected `object`, got `array`"),
        ("health", "Expected `object`, got `str`"),
        (None, "Expected `object`, got `null`"),
    ],
)
def test_unknown_type_or_not_an_object(obj: object, words: str) -> None:
    assert words in _reason(obj, "health")


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"{'type': 'health'}", b"not json", b'{"type":"health",}', b"\x00", b"[" * 5000],
)
def test_bad_json(data: bytes) -> None:
    with pytest.raises(DecodeError, match=r"not valid JSON|invalid event"):
        decode_entry({b"data": data}, stream="health")


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe{}",
        b'{"type":"health","event_id":"\xff","region":"eu","source":"p","status":"healthy",'
        b'"observed_at":1}',
        b'{"type":"health","event_id":"\xc3\x28"}',
        b'{"type":"drain","detail":"\\ud800"}',  # an unpaired surrogate escape
    ],
)
def test_non_utf8(data: bytes) -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_entry({b"data": data}, stream="events")


def test_no_data_field() -> None:
    for fields in ({}, {b"payload": encode_data(FULL[0])}, [(b"Data", b"{}")]):
        with pytest.raises(DecodeError, match="no 'data' field"):
            decode_entry(fields, stream="health")


def test_duplicate_data_fields() -> None:
    data = encode_data(FULL[0])
    with pytest.raises(DecodeError, match="2 'data' fields"):
        decode_entry([(b"data", data), (b"data", data)], stream="health")


def test_oversized_entry_is_refused_before_parsing() -> None:
    big = HealthEvent("h", "eu", "p", "healthy", T0, detail="x" * MAX_DATA_BYTES)
    data = encode_data(big)
    assert len(data) > MAX_DATA_BYTES
    with pytest.raises(DecodeError, match="too large"):
        decode_entry({b"data": data}, stream="health")
    # Just under the limit still decodes.
    fits = HealthEvent("h", "eu", "p", "healthy", T0, detail="x" * (MAX_DATA_BYTES - 200))
    assert decode_entry(encode_entry(fits), stream="health") == fits  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "stream"),
    [(e, s) for e in FULL for s in STREAMS if s != STREAM_OF[type(e)]],
    ids=[
        f"{t}-on-{s}"
        for e, t in zip(FULL, TAGS, strict=True)
        for s in STREAMS
        if s != STREAM_OF[type(e)]
    ],
)
def test_valid_entry_on_the_wrong_stream(entry: AnyEntry, stream: str) -> None:
    tag = type(entry).__struct_config__.tag
    reason = _reason(_obj(entry), stream)
    assert reason == f"a {tag} entry does not belong on the {stream} stream"


# --- fuzzing: nothing a producer writes makes the decoder raise anything but DecodeError ---

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_FIELD_NAMES = [*sorted({name for e in FULL for name in _obj(e)}), "x"]


def _check_decodes_or_refuses(data: bytes) -> None:
    for stream in STREAMS:
        try:
            entry = decode_entry({b"data": data}, stream=stream)  # type: ignore[arg-type]
        except DecodeError as exc:
            assert exc.reason
        else:
            assert STREAM_OF[type(entry)] == stream


@_FUZZ
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check_decodes_or_refuses(data)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from([*TAGS, "healthy", "unhealthy", "degraded", "utf-8", "base64"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=5), children, max_size=6)
    ),
    max_leaves=20,
)


@_FUZZ
@given(
    st.sampled_from(FULL),
    st.dictionaries(st.sampled_from(_FIELD_NAMES), _json_values, max_size=4),
    st.lists(st.sampled_from(_FIELD_NAMES), max_size=3),
)
def test_fuzz_mutated_valid_entries(
    entry: AnyEntry, changes: dict[str, object], dropped: list[str]
) -> None:
    obj = _obj(entry) | changes
    for name in dropped:
        obj.pop(name, None)
    _check_decodes_or_refuses(json.dumps(obj).encode())  # NaN/Infinity literals included


@_FUZZ
@given(_json_values)
def test_fuzz_arbitrary_json_values(value: object) -> None:
    _check_decodes_or_refuses(json.dumps(value).encode())


# --- dead-letter raw fields ---

_pairs = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=24)), max_size=6).map(
    lambda ps: ps + ps[:1]  # always include a duplicate when non-empty
)


@_FUZZ
@given(_pairs)
def test_raw_fields_round_trip_with_duplicates_and_binary(pairs: list[tuple[bytes, bytes]]) -> None:
    raw, encoding = raw_from_fields(pairs)
    all_utf8 = True
    for k, v in pairs:
        try:
            k.decode("utf-8")
            v.decode("utf-8")
        except UnicodeDecodeError:
            all_utf8 = False
    assert encoding == ("utf-8" if all_utf8 else "base64")
    assert fields_from_raw(raw, encoding) == pairs
    # ... and through a dead letter on the wire.
    letter = DeadLetter("ns:health", "1-0", "bad", 1, raw, encoding)
    back = decode_entry(encode_entry(letter), stream="dlq")  # type: ignore[arg-type]
    assert isinstance(back, DeadLetter)
    assert fields_from_raw(back.raw, back.raw_encoding) == pairs


def test_raw_fields_keep_order_and_duplicates() -> None:
    pairs = [(b"data", b"{"), (b"x", b"1"), (b"data", b"}")]
    assert raw_from_fields(pairs) == ([("data", "{"), ("x", "1"), ("data", "}")], "utf-8")
    binary = [(b"data", b"\xff"), (b"data", b"ok")]
    raw, encoding = raw_from_fields(binary)
    assert encoding == "base64"  # every field and value, not only the bad one
    assert raw == [("ZGF0YQ==", "/w=="), ("ZGF0YQ==", "b2s=")]
    assert raw_from_fields({b"data": b"v"}) == ([("data", "v")], "utf-8")


def test_bad_raw_fields_raise_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid base64"):
        fields_from_raw([("ZGF0YQ==", "not base64!")], "base64")
    with pytest.raises(DecodeError, match="not valid utf-8"):
        fields_from_raw([("\ud800", "x")], "utf-8")


async def test_duplicate_fields_survive_a_raw_read(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """XADD keeps duplicate fields; a raw read (here via Lua) sees them and the codec refuses.

    redis-py's own XRANGE/XREADGROUP parsing folds an entry's fields into a dict, so a
    consumer that wants to dead-letter duplicates faithfully must read entries raw.
    """
    good = encode_data(FULL[0])
    await redis_client.execute_command("XADD", keys.health, "*", "data", good, "data", b"\xff")
    raw_read = await redis_client.eval(
        "return redis.call('XRANGE', KEYS[1], '-', '+')", 1, keys.health
    )
    flat = raw_read[0][1]
    pairs = list(zip(flat[::2], flat[1::2], strict=True))
    assert pairs == [(b"data", good), (b"data", b"\xff")]
    with pytest.raises(DecodeError, match="2 'data' fields"):
        decode_entry(pairs, stream="health")
    raw, encoding = raw_from_fields(pairs)
    assert encoding == "base64"
    assert fields_from_raw(raw, encoding) == pairs
    folded = (await redis_client.xrange(keys.health))[0][1]
    assert folded == {b"data": b"\xff"}  # what the parsed read would have shown


def test_base64_is_standard_alphabet() -> None:
    raw, _ = raw_from_fields([(b"\xfb\xff", b"\xfe")])
    assert raw == [(base64.b64encode(b"\xfb\xff").decode(), base64.b64encode(b"\xfe").decode())]


def test_event_time_ahead_of_arrival_is_refused_beyond_the_skew() -> None:
    arrived_ms = 1_795_000_000_000
    entry_id = f"{arrived_ms}-3".encode()

    def health_at(t: float) -> HealthEvent:
        return HealthEvent(event_id="e", region="eu", source="p", status="healthy", observed_at=t)

    check_event_time(health_at(arrived_ms / 1000 + 5.0), entry_id, 5000)  # at the bound
    check_event_time(health_at(arrived_ms / 1000 - 3600), entry_id, 5000)  # late is fine
    with pytest.raises(DecodeError, match=r"5\.001s ahead .*FAILOVER_MAX_CLOCK_SKEW_MS=5000"):
        check_event_time(health_at(arrived_ms / 1000 + 5.001), entry_id, 5000)
    drain = Drain(event_id="d", region="eu", actor="op", at=arrived_ms / 1000 + 60)
    with pytest.raises(DecodeError, match="ahead of its arrival"):
        check_event_time(drain, entry_id, 5000)
    check_event_time(drain, entry_id, 0)  # 0 turns the check off
