"""``python -m workers.executor.receiver``: a small webhook receiver, the end of the chain.

What a real resource behind the executor's webhook must do, in about a hundred lines:

- authenticate: the ``X-Failover-Signature`` must be the HMAC-SHA256 of the body under
  ``FAILOVER_EXECUTOR_WEBHOOK_SECRET`` (else 401, nothing applied);
- fence: a decision whose epoch is lower than the highest it applied is refused (409);
- dedupe: a decision id it already applied is answered 200 ``duplicate`` and not applied
  again (the executor sends a decision again after a crash, with the same id: the id is the
  idempotency key);
- apply: record the routing (the decision's ``to_region``), in ``--state FILE`` if given
  (written atomically, read back at start, so a restart forgets nothing).

``GET /state`` shows the routing and every decision applied; ``GET /healthz`` answers 200.
For tests and benchmarks: ``--delay-ms`` holds each answer after applying, ``--fail-status``
answers every POST with that status without applying. The listening URL is printed on
stdout once ready. SIGTERM/SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from schemas.codec import decode_data
from schemas.errors import ConfigError, DecodeError
from schemas.events import FailoverDecision
from workers.executor.signature import DECISION_ID_HEADER, EPOCH_HEADER, HEADER, verify
from workers.settings import read_setting


class Applied(msgspec.Struct, frozen=True):
    """One decision the receiver applied."""

    decision_id: str
    epoch: int
    from_region: str
    to_region: str
    applied_at: float


class ReceiverState(msgspec.Struct):
    """The routing and what led to it; the ``--state`` file's content."""

    routing: str | None = None
    epoch: int = 0
    applied: list[Applied] = []
    duplicates: int = 0
    stale: int = 0
    bad_signatures: int = 0
    invalid: int = 0


class Receiver:
    """The HTTP handlers and the state they guard."""

    def __init__(
        self, secret: str, state_file: Path | None, delay_s: float, fail_status: int | None
    ) -> None:
        self._secret = secret
        self.state_file = state_file
        self.delay_s = delay_s
        self.fail_status = fail_status
        self.state = ReceiverState()
        if state_file is not None and state_file.exists():
            self.state = msgspec.json.decode(state_file.read_bytes(), type=ReceiverState)
        self._ids = {a.decision_id for a in self.state.applied}
        self._lock = asyncio.Lock()

    def app(self) -> web.Application:
        """The aiohttp application: POST / (decisions), GET /state, GET /healthz."""
        app = web.Application()
        app.router.add_post("/", self.decision)
        app.router.add_get("/state", self.show)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        """200 once serving."""
        return _answer(200, "ok")

    async def show(self, _: web.Request) -> web.Response:
        """The state as JSON."""
        return web.Response(body=msgspec.json.encode(self.state), content_type="application/json")

    async def decision(self, request: web.Request) -> web.Response:
        """Authenticate, fence, dedupe and apply one decision."""
        body = await request.read()
        async with self._lock:
            answer = self._judge(request, body)
            if answer is None:
                answer = self._apply(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        said = answer.text.strip() if answer.text else ""
        decision_id = request.headers.get(DECISION_ID_HEADER, "-")
        print(f"answered {decision_id}: {answer.status} {said}", flush=True)
        return answer

    def _judge(self, request: web.Request, body: bytes) -> web.Response | None:
        st = self.state
        if not verify(self._secret, body, request.headers.get(HEADER)):
            st.bad_signatures += 1
            return _answer(401, "bad signature")
        if self.fail_status is not None:
            return _answer(self.fail_status, "failing on purpose (--fail-status)")
        try:
            decision = decode_data(body)
        except DecodeError as exc:
            st.invalid += 1
            return _answer(400, f"not a decision: {exc.reason}")
        if not isinstance(decision, FailoverDecision):
            st.invalid += 1
            return _answer(400, "not a failover decision")
        headers = (request.headers.get(DECISION_ID_HEADER), request.headers.get(EPOCH_HEADER))
        if headers != (decision.decision_id, str(decision.epoch)):
            st.invalid += 1
            return _answer(400, "decision id / epoch headers do not match the body")
        if decision.decision_id in self._ids:
            st.duplicates += 1
            return _answer(200, "duplicate: already applied, not applied again")
        if decision.epoch < st.epoch:
            st.stale += 1
            return _answer(409, f"stale epoch {decision.epoch} < {st.epoch}")
        return None

    def _apply(self, body: bytes) -> web.Response:
        decision = msgspec.json.decode(body, type=FailoverDecision)
        st = self.state
        st.routing, st.epoch = decision.to_region, decision.epoch
        st.applied.append(
            Applied(
                decision.decision_id,
                decision.epoch,
                decision.from_region,
                decision.to_region,
                time.time(),
            )
        )
        self._ids.add(decision.decision_id)
        self._save()
        return _answer(200, f"applied: routing {decision.to_region}")

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = msgspec.json.encode(self.state)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".receiver-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(self.state_file)


def _answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workers.executor.receiver",
        description="A webhook receiver that checks signatures, epochs and decision ids.",
        epilog="The secret comes from FAILOVER_EXECUTOR_WEBHOOK_SECRET.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state", type=Path, help="file keeping the routing across restarts")
    parser.add_argument("--delay-ms", type=int, default=0, help="hold each answer this long")
    parser.add_argument("--fail-status", type=int, help="answer every POST with this status")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, secret: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    receiver = Receiver(secret, args.state, args.delay_ms / 1000, args.fail_status)
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    addresses: list[Any] = runner.addresses  # the bound (host, port), also for --port 0
    port = addresses[0][1] if addresses else args.port
    print(f"receiver listening on http://{args.host}:{port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on SIGTERM, 2 without a secret."""
    args = _args(argv)
    try:
        secret = read_setting("EXECUTOR_WEBHOOK_SECRET")
    except ConfigError as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        sys.exit(2)
    if not secret:
        print("receiver: FAILOVER_EXECUTOR_WEBHOOK_SECRET: is required", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(args, secret))
    except msgspec.DecodeError as exc:  # includes a state file of the wrong shape
        print(f"receiver: --state {args.state}: unreadable: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the port is taken, the address is not ours, the file is not
        print(f"receiver: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
