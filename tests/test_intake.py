"""The intake's merge order, against a model of two Redis streams read in batches."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.group import StreamEntry
from workers.coordinator.intake import Intake


class _Streams:
    """Two streams with a consumer group each: entries arrive, reads take up to ``count``."""

    def __init__(self) -> None:
        self.arrived: list[list[bytes]] = [[], []]
        self.delivered = [0, 0]

    def add(self, stream: int, entry_id: bytes) -> None:
        self.arrived[stream].append(entry_id)

    def read(self, intake: Intake, count: int) -> None:
        for i in intake.wanted(count):
            start = self.delivered[i]
            ids = self.arrived[i][start : start + count]
            self.delivered[i] += len(ids)
            intake.add(i, [[e, [b"data", b"x"]] for e in ids], full=len(ids) == count)

    @property
    def drained(self) -> bool:
        return all(d == len(a) for d, a in zip(self.delivered, self.arrived, strict=True))


def _drain(intake: Intake, streams: _Streams, counts: list[int]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    rounds = 0
    while not (streams.drained and intake.empty):
        streams.read(intake, counts[rounds % len(counts)])
        runs = intake.take_ready()
        for (a, _), (b, _) in itertools.pairwise(runs):
            assert a != b, "adjacent runs must come from different streams"
        out.extend((i, e[0]) for i, entries in runs for e in entries)
        rounds += 1
        assert rounds < 10_000, "no progress"
    return out


def _key(item: tuple[int, bytes]) -> tuple[int, int, int]:
    stream, entry_id = item
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq), stream


@settings(max_examples=300, deadline=None)
@given(
    layout=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3)), min_size=1, max_size=80),
    counts=st.lists(st.integers(1, 7), min_size=1, max_size=5),
)
def test_a_backlog_is_applied_in_id_order_whatever_the_batch_sizes(
    layout: list[tuple[int, int]], counts: list[int]
) -> None:
    """Everything already in both streams comes out sorted by (ms, seq, health first)."""
    streams = _Streams()
    ms = 1000
    seqs: dict[tuple[int, int], int] = {}
    expected = []
    for stream, step in layout:
        ms += step  # equal ms on both streams happen often: ties are broken by seq, then stream
        seq = seqs.get((stream, ms), 0)
        seqs[stream, ms] = seq + 1
        entry_id = b"%d-%d" % (ms, seq)
        streams.add(stream, entry_id)
        expected.append((stream, entry_id))
    got = _drain(Intake(), streams, counts)
    assert got == sorted(expected, key=_key)


@settings(max_examples=300, deadline=None)
@given(
    script=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 1)),
            st.tuples(st.just("read"), st.integers(1, 6)),
        ),
        min_size=1,
        max_size=120,
    )
)
def test_entries_arriving_while_reading_are_applied_in_arrival_order(
    script: list[tuple[str, int]],
) -> None:
    """With ids from one clock (as Redis assigns them), the order is the arrival order."""
    intake = Intake()
    streams = _Streams()
    out: list[tuple[int, bytes]] = []
    arrival = []
    for n, (action, arg) in enumerate(script):
        if action == "add":
            entry_id = b"%d-0" % (1000 + n)
            streams.add(arg, entry_id)
            arrival.append((arg, entry_id))
        else:
            streams.read(intake, arg)
            out.extend((i, e[0]) for i, entries in intake.take_ready() for e in entries)
    out += _drain(intake, streams, [3])
    assert out == arrival


def test_a_full_read_holds_back_the_other_stream_until_the_horizon_passes() -> None:
    intake = Intake()
    intake.add(0, [[b"1-0", []], [b"3-0", []]], full=True)
    intake.add(1, [[b"2-0", []], [b"4-0", []]], full=False)
    first = intake.take_ready()
    assert [(i, [e[0] for e in es]) for i, es in first] == [
        (0, [b"1-0"]),
        (1, [b"2-0"]),
        (0, [b"3-0"]),
    ]
    assert intake.buffers == [[], [[b"4-0", []]]]  # health may still hold ids below 4-0
    intake.add(0, [[b"5-0", []]], full=False)
    intake.add(1, [], full=False)
    second = intake.take_ready()
    assert [(i, [e[0] for e in es]) for i, es in second] == [(1, [b"4-0"]), (0, [b"5-0"])]
    assert intake.empty


def test_claimed_entries_keep_their_delivery_counts_and_deleted_ones_become_orphans() -> None:
    intake = Intake()
    intake.add_claimed(1, [StreamEntry(1, b"7-0", [b"data", b"x"], 3)], [b"6-0"])
    assert intake.deliveries[1] == {b"7-0": 3}
    assert intake.take_orphans() == [(1, b"6-0")]
    assert intake.take_orphans() == []
    intake.add(0, [], full=False)
    intake.add(1, [[b"8-0", [b"data", b"y"]]], full=False, redelivered=[b"8-0"])
    assert intake.deliveries[1] == {b"7-0": 3, b"8-0": 2}
    assert intake.seen[1] == b"8-0"
    assert [(i, [e[0] for e in es]) for i, es in intake.take_ready()] == [(1, [b"7-0", b"8-0"])]
