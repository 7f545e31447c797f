"""Entries delivered to the leader but not yet applied, and the order they are applied in.

The order depends only on the streams, not on batch sizes or leader changes: by entry id
(``ms``, then ``seq``), ``health`` before ``events`` on a tie. A batch is cut at a
*horizon*: when a read filled its count on a stream, that stream may hold more entries just
after the last one read, so no entry of the other stream with a larger id is handed out
yet; it stays buffered (delivered, unacked) for the next round. Claimed entries join the
same buffers, so they too are merged in id order with what is read after them.

The one exception: an entry that lands on one stream with an id below one already handed
out from the other (possible within a single millisecond, as each stream numbers its own
entries; with explicit ids; or if the server clock steps back) is handed out when it is
read, after it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from streams.group import ZERO_ID, RawEntry, StreamEntry, split_id

Run = tuple[int, list[RawEntry]]
"""Consecutive entries of one stream (its index in ``Keys.input_streams``), in id order."""


class Intake:
    """Per-stream buffers of delivered entries, handed out in the merge order."""

    def __init__(self, streams: int = 2) -> None:
        self.buffers: list[list[RawEntry]] = [[] for _ in range(streams)]
        # Delivery counts other than 1 (claimed or redelivered entries), per stream.
        self.deliveries: list[dict[bytes, int]] = [{} for _ in range(streams)]
        # Whether each stream may hold undelivered entries right after its buffer's last.
        self.more = [True] * streams
        # The last id delivered to us on each stream (where an idle wait starts).
        self.seen = [ZERO_ID] * streams
        # Entries claimed while pending but already deleted from their stream.
        self.orphans: list[tuple[int, bytes]] = []
        # The Redis server's clock (ms) at the latest read: every buffered entry arrived
        # before it, so event times are judged against it (never a producer-chosen id).
        self.server_ms: int | None = None

    @property
    def empty(self) -> bool:
        """True when nothing is buffered."""
        return not any(self.buffers)

    def wanted(self, count: int) -> list[int]:
        """The streams worth reading: those with fewer than ``count`` entries buffered."""
        return [i for i, buf in enumerate(self.buffers) if len(buf) < count]

    def add(
        self, stream: int, entries: list[RawEntry], *, full: bool, redelivered: Iterable[bytes] = ()
    ) -> None:
        """Buffer what a read of ``stream`` returned; ``full`` if it returned its count."""
        if entries:
            self.buffers[stream].extend(entries)
            self.seen[stream] = entries[-1][0]
            for entry_id in redelivered:
                self.deliveries[stream][entry_id] = 2  # at least: Redis counted one more
        self.more[stream] = full

    def add_claimed(self, stream: int, entries: list[StreamEntry], deleted: list[bytes]) -> None:
        """Buffer entries claimed from earlier leaders (older than anything undelivered)."""
        buf = self.buffers[stream]
        counts = self.deliveries[stream]
        for entry in entries:
            buf.append([entry.entry_id, entry.fields])
            counts[entry.entry_id] = entry.deliveries
        self.orphans.extend((stream, entry_id) for entry_id in deleted)

    def take_orphans(self) -> list[tuple[int, bytes]]:
        """Remove and return the claimed-but-deleted entries."""
        orphans, self.orphans = self.orphans, []
        return orphans

    def take_ready(self) -> list[Run]:
        """Remove and return the entries that may be applied now, as runs, in order."""
        buffers = self.buffers
        if sum(1 for buf in buffers if buf) <= 1:
            # One stream only: all of it is ready (an empty buffer after a read means that
            # stream had nothing more when all were read in the same atomic step).
            whole = [(i, buf) for i, buf in enumerate(buffers) if buf]
            self.buffers = [[] for _ in buffers]
            return whole
        # Ids compare as exact (ms, seq) int pairs; None: no stream limits the cut.
        limit: tuple[int, int] | None = None
        for i, buf in enumerate(buffers):
            if self.more[i] and buf:
                last = split_id(buf[-1][0])
                limit = last if limit is None else min(limit, last)
        keyed: list[list[tuple[tuple[int, int], int, RawEntry]]] = []
        for i, buf in enumerate(buffers):
            rows = [(split_id(e[0]), i, e) for e in buf]
            cut = len(rows)
            while cut and limit is not None and rows[cut - 1][0] > limit:
                cut -= 1
            keyed.append(rows[:cut])
            buffers[i] = buf[cut:]
        runs: list[Run] = []
        for _, i, entry in heapq.merge(*keyed):
            if runs and runs[-1][0] == i:
                runs[-1][1].append(entry)
            else:
                runs.append((i, [entry]))
        return runs
