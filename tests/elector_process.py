"""A minimal process entry point around one Elector, for process-level tests.

``python -m tests.elector_process URL NAMESPACE TTL_MS`` campaigns, leads until SIGTERM or
SIGINT (handled here, in the entry point, as the house rules want), then releases the lease
and exits 0. It prints one JSON line per event on stdout (``ready``, ``elected``,
``demoted``, ``exiting``) with the monotonic time, which is the same clock across processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from streams.connection import connect
from streams.keys import Keys
from streams.lease import make_owner_id
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import DemotionReason, ElectorTiming, Leadership


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


async def _main(url: str, namespace: str, ttl_ms: int) -> int:
    client = connect(url)
    owner = make_owner_id("proc")
    timing = ElectorTiming(
        ttl_ms=ttl_ms,
        renew_interval_ms=ttl_ms // 5,
        renew_deadline_ms=ttl_ms * 2 // 3,
        retry_period_ms=ttl_ms // 5,
    )

    def elected(leadership: Leadership) -> None:
        _emit("elected", owner=leadership.owner, epoch=leadership.epoch)

    def demoted(leadership: Leadership, reason: DemotionReason) -> None:
        _emit("demoted", owner=leadership.owner, epoch=leadership.epoch, reason=reason)

    elector = Elector(
        client, Keys(namespace), owner, timing, on_elected=elected, on_demoted=demoted
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, elector.stop)

    async def work(leadership: Leadership) -> None:
        await asyncio.Event().wait()  # lead until told to stop

    _emit("ready", owner=owner)
    try:
        await elector.run(work)
    finally:
        await client.aclose()
    _emit("exiting", owner=owner)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
