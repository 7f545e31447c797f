"""What one elector knows of the quarantine after a Redis primary change (DESIGN §4 v2).

The acquire script refuses every acquisition for one TTL after it sees the primary's
replication id change (``streams/lua/acquire.lua``); the refusal says how long is left.
This elector then makes no attempt before that much time has passed on its own monotonic
clock, and logs one line when the quarantine starts (for this process) and one when it is
over. Why a full TTL: a leader whose lease the promotion lost is still running until its
renew fails or its renew deadline (< TTL) passes; nobody may lead beside it meanwhile.
"""

from __future__ import annotations

import logging
import time

from streams.lease import Quarantined

log = logging.getLogger(__name__)

# Wake this long after the quarantine should have ended in Redis, so the next attempt lands
# after it rather than a hair before.
_MARGIN_S = 0.005


class Quarantine:
    """The monotonic deadline before which this elector does not try to acquire."""

    def __init__(self) -> None:
        self.until: float | None = None
        self.replid: str | None = None
        # Monotonic send time of the first attempt the latest quarantine refused (kept
        # after it ends): the quarantine began in Redis no earlier than this.
        self.since: float | None = None

    @property
    def remaining_ms(self) -> int | None:
        """Milliseconds of quarantine left as this process knows it (None: not in one)."""
        if self.until is None:
            return None
        return max(0, round((self.until - time.monotonic()) * 1000))

    def refused(self, result: Quarantined, sent: float) -> float:
        """Record a refusal of the attempt sent at ``sent`` (monotonic); return how many
        seconds to wait before the next attempt."""
        now = time.monotonic()
        if self.until is None or result.replid != self.replid:
            self.since = sent
            log.warning(
                "quarantine: the Redis primary changed (replication id now %s, %s); no"
                " coordinator acquires the lease for %sms",
                result.replid,
                "seen first by this process" if result.started else "seen by another first",
                result.pttl_ms,
            )
        self.replid = result.replid
        self.until = max(self.until or now, now + result.pttl_ms / 1000)
        return self.until - now + _MARGIN_S

    def over(self) -> None:
        """An attempt was not refused: log the end of a quarantine this process saw."""
        if self.until is None:
            return
        log.info("quarantine over: campaigning on the primary with replication id %s", self.replid)
        self.until = None
