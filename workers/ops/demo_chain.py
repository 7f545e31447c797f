"""The demo's end of the chain: a real executor process and the receiver it calls.

The receiver (``python -m workers.executor.receiver``) stands for the DNS or load balancer:
it checks the webhook signature, the epoch and the decision id, and records the routing.
The executor (``python -m workers.executor``) follows the decisions and POSTs each one to
it, signed with a secret made up for this run. The demo watches the executor's reports on
``NS:events`` and asks the receiver what it applied.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from schemas.codec import decode_entry
from schemas.errors import DecodeError
from schemas.events import FailoverCompleted, FailoverDecision, FailoverFailed
from streams.connection import Client
from streams.history import read_page
from streams.keys import Keys
from streams.server import free_port
from workers.ops.fleet import Fleet

# Quick retries, so a hiccup of the receiver shows within the demo.
EXECUTOR_ENV = {
    "FAILOVER_INSTANCE_ID": "executor-1",
    "FAILOVER_EXECUTOR_TIMEOUT_MS": "2000",
    "FAILOVER_EXECUTOR_ATTEMPTS": "3",
    "FAILOVER_EXECUTOR_BACKOFF_MS": "100",
}
START_TIMEOUT_S = 20
WATCH_EVERY_S = 0.1


class ExecutorChain:
    """Starts, watches and sums up the executor and the receiver of one demo run."""

    def __init__(
        self,
        fleet: Fleet,
        keys: Keys,
        note: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.keys = keys
        self.note = note
        self.clock = clock
        self.url = ""
        self.reports: list[tuple[float, FailoverCompleted | FailoverFailed]] = []

    async def start(self, interrupted: Callable[[], bool]) -> bool:
        """Start the receiver and the executor; False if the receiver did not come up."""
        secret = secrets.token_hex(16)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.fleet.spawn(
            "receiver",
            ["workers.executor.receiver", "--port", str(port)],
            {"FAILOVER_EXECUTOR_WEBHOOK_SECRET": secret},
        )
        self.fleet.spawn(
            "executor",
            ["workers.executor"],
            {
                **EXECUTOR_ENV,
                "FAILOVER_EXECUTOR_WEBHOOK_URL": self.url,
                "FAILOVER_EXECUTOR_WEBHOOK_SECRET": secret,
            },
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        log = self.fleet.log_path("receiver")
        while "listening on" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or interrupted():
                return False
            await asyncio.sleep(0.05)
        return True

    async def watch(self, redis: Client, stop: asyncio.Event) -> None:
        """Note each executor report on NS:events and the receiver's routing after it."""
        cursor = "-"
        while not stop.is_set():
            for entry_id, fields in await read_page(redis, self.keys.events, cursor):
                cursor = f"({entry_id.decode()}"
                try:
                    entry = decode_entry(fields, stream="events")
                except DecodeError:
                    continue
                if isinstance(entry, FailoverCompleted | FailoverFailed):
                    self.reports.append((self.clock(), entry))
                    kind = type(entry).__struct_config__.tag
                    self.note(f"executor: {kind} {entry.decision_id} ({entry.detail})")
                    state = await self.receiver_state()
                    self.note(
                        f"receiver: routing {state.get('routing')} (epoch {state.get('epoch')},"
                        f" {len(state.get('applied', []))} applied)"
                    )
            try:
                async with asyncio.timeout(WATCH_EVERY_S):
                    await stop.wait()
            except TimeoutError:
                pass

    async def receiver_state(self) -> dict[str, Any]:
        """The receiver's ``GET /state`` (``{"error": ...}`` if it does not answer)."""

        def get() -> dict[str, Any]:
            with urllib.request.urlopen(self.url + "state", timeout=2) as answer:  # noqa: S310 - our own receiver
                data: dict[str, Any] = json.loads(answer.read())
                return data

        try:
            return await asyncio.to_thread(get)
        except OSError as exc:
            return {"error": str(exc)}

    def summary(
        self,
        out: TextIO,
        decisions: list[FailoverDecision],
        receiver: dict[str, Any],
        target: str,
    ) -> bool:
        """Print the executor line; True if every decision was applied once and reported."""
        decided = [d.decision_id for d in decisions]
        completed = [r.decision_id for _, r in self.reports if isinstance(r, FailoverCompleted)]
        applied = [a.get("decision_id") for a in receiver.get("applied", [])]
        print(
            f"  executor: {len(completed)} failover_completed for {len(decided)} decisions;"
            f" receiver routing {receiver.get('routing')}, applied"
            f" {', '.join(map(str, applied)) or 'nothing'} ({receiver.get('duplicates', 0)}"
            f" duplicates, {receiver.get('bad_signatures', 0)} bad signatures)",
            file=out,
        )
        return (
            completed == decided
            and applied == decided
            and receiver.get("routing") == target
            and not receiver.get("bad_signatures")
        )
