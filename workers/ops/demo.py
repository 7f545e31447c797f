"""``failoverctl demo``: a private fleet taken through a regional outage and a leader crash.

Starts a private Redis, three coordinator processes, a real executor
(``python -m workers.executor``) and the receiver it calls (``python -m
workers.executor.receiver``: checks the signature, the epoch and the decision id, records
the routing) (:mod:`workers.ops.fleet`) and, in this process, two simulated observers
probing three regions. Then the script: at 20% of the run the active region fails (both
observers report it unhealthy), at 50% the leader is SIGKILLed, at 75% the region recovers.
It shows leadership, regions, decisions and lag live, ends with a summary (the failover it
staged, the decision, the takeover time it measured) and leaves no process behind.
Exit 0 when the failover was decided exactly once, applied once at the receiver and
reported completed by the executor, and another coordinator took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import msgspec

from schemas.codec import decode_entry
from schemas.errors import DecodeError
from schemas.events import FailoverDecision, HealthEvent, LeaderChanged
from streams.connection import Client, connect
from streams.decisions import DecisionsReader
from streams.keys import Keys
from streams.lease import read_lease
from streams.producer import append_many
from streams.server import find_server_binary
from workers.ops.demo_chain import ExecutorChain
from workers.ops.fleet import Fleet
from workers.ops.report import write_report
from workers.ops.status import StatusReport, gather_status
from workers.settings import Settings, load_settings

REGIONS = ("us-east", "eu-west", "ap-south")
OBSERVERS = ("observer-1", "observer-2")
COORDINATORS = ("coord-1", "coord-2", "coord-3")
NAMESPACE = "{demo}"
MIN_SECONDS = 10
OBSERVE_EVERY_S = 0.25
REFRESH_S = 0.5
LEASE_TTL_MS = 2000
# Fleet settings: a short lease so the takeover is quick; two observers must agree.
FLEET_ENV = {
    "FAILOVER_NAMESPACE": NAMESPACE,
    "FAILOVER_REGIONS": ",".join(REGIONS),
    "FAILOVER_LEASE_TTL_MS": str(LEASE_TTL_MS),
    "FAILOVER_THRESHOLD": "3",
    "FAILOVER_QUORUM": "2",
    "FAILOVER_WINDOW_MS": "5000",
    "FAILOVER_STALE_AFTER_MS": "5000",
    "FAILOVER_RECOVERY_THRESHOLD": "2",
    "FAILOVER_COOLDOWN_MS": "10000",
    "FAILOVER_TICK_MS": "200",
    "FAILOVER_REELECT_DELAY_MS": "1000",
    "FAILOVER_REELECT_JITTER_MS": "0",
    "FAILOVER_SHUTDOWN_TIMEOUT_MS": "2000",
    "FAILOVER_BATCH_SIZE": "100",
}


class Takeover(msgspec.Struct, frozen=True):
    """The leader crash the demo staged and what it measured."""

    killed: str
    killed_epoch: int
    lease_left_s: float
    new_leader: str | None = None
    new_epoch: int = 0
    takeover_s: float | None = None


class Demo:
    """One run of the demo; :meth:`cleanup` must run whatever happens."""

    def __init__(self, seconds: int, out: TextIO) -> None:
        self.seconds = seconds
        self.out = out
        self.tty = out.isatty()
        self.keys = Keys(NAMESPACE)
        self.fleet = Fleet(COORDINATORS, FLEET_ENV)
        self.t0 = time.monotonic()
        self.outage = False
        self.notes: list[str] = []
        self.failovers: list[tuple[float, FailoverDecision]] = []
        self.leaders: list[tuple[float, LeaderChanged]] = []
        self.takeover: Takeover | None = None
        self.chain = ExecutorChain(self.fleet, self.keys, self.note, self._t)
        self.outage_at = 0.2 * seconds
        self.kill_at = 0.5 * seconds
        self.recover_at = 0.75 * seconds
        self._drawn = 0
        self._last_view: tuple[object, ...] = ()
        self.stop = asyncio.Event()
        self.interrupted = False

    # -- output ---------------------------------------------------------------------------

    def _t(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        """Record an event: printed at once when not on a terminal, else shown in the table."""
        line = f"+{self._t():5.1f}s  {text}"
        self.notes.append(line)
        if not self.tty:
            print(line, file=self.out, flush=True)

    def _draw(self, report: StatusReport) -> None:
        lag = report.lag
        summary = report.summary
        active = summary.active_region if summary else REGIONS[0]
        states = {r: i.state for r, i in summary.regions.items()} if summary else {}
        view = (lag.leader, lag.epoch, active, tuple(sorted(states.items())))
        if not self.tty:
            if view != self._last_view:
                regions = " ".join(f"{r}={states.get(r, 'unknown')}" for r in REGIONS)
                self.note(f"leader {lag.leader} epoch {lag.epoch}, active {active}: {regions}")
            self._last_view = view
            return
        phase = "healthy"
        if self._t() >= self.recover_at:
            phase = f"{REGIONS[0]} recovered"
        elif self.outage:
            phase = f"outage of {REGIONS[0]}"
        lines = [
            f"failoverctl demo  +{self._t():5.1f}s of {self.seconds}s   phase: {phase}",
            f"leader  {lag.leader or 'NONE'}  epoch {lag.epoch}"
            f"  lease {(lag.lease_ms_left or 0) / 1000:.1f}s   active {active}",
        ]
        for region in REGIONS:
            info = summary.regions.get(region) if summary else None
            seen = sorted(info.observers.items()) if info else []
            observers = " ".join(f"{o}={s}" for o, s in seen)
            name = region + ("*" if region == active else "")
            lines.append(f"  {name:<10}{states.get(region, 'unknown'):<8} {observers}")
        parts = [f"{s.stream.rsplit(':', 1)[-1]} {s.lag}/{s.pending}" for s in lag.streams]
        lines.append(
            f"lag/pending  {'   '.join(parts)}   lag status {report.overall.status}"
            f"   decisions {lag.decisions_length}   dead letters {lag.dlq_length}"
        )
        lines += ["recent:", *[f"  {n}" for n in self.notes[-6:]]]
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def cleanup(self) -> list[int]:
        """Stop the fleet; the pids it stopped."""
        return self.fleet.stop()

    # -- the actors -----------------------------------------------------------------------

    async def _observe(self, redis: Client) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            now = time.time()
            events = [
                HealthEvent(
                    event_id=f"{observer}-{seq}-{region}",
                    region=region,
                    source=observer,
                    status="unhealthy" if failing else "healthy",
                    observed_at=now + o * 1e-3,
                    latency_ms=None if failing else 12.0 + o,
                    detail="connect timeout" if failing else "HTTP 200",
                )
                for o, observer in enumerate(OBSERVERS)
                for region in REGIONS
                for failing in [self.outage and region == REGIONS[0]]
            ]
            await append_many(redis, [(self.keys.health, event) for event in events])
            await self._pause(OBSERVE_EVERY_S)

    async def _follow(self, redis: Client) -> None:
        """Watch decisions (the executor process acts on them)."""
        reader = DecisionsReader(redis, self.keys)
        cursor = "0-0"
        while not self.stop.is_set():
            for entry_id, fields in await reader.follow(cursor, block_ms=100):
                cursor = entry_id.decode()
                try:
                    entry = decode_entry(fields, stream="decisions")
                except DecodeError as exc:
                    self.note(f"undecodable decision {cursor}: {exc.reason}")
                    continue
                if isinstance(entry, LeaderChanged):
                    self.leaders.append((self._t(), entry))
                    self.note(f"leader_changed: {entry.leader} epoch {entry.epoch}")
                elif isinstance(entry, FailoverDecision):
                    self.failovers.append((self._t(), entry))
                    self.note(
                        f"DECISION {entry.decision_id}: {entry.from_region} -> "
                        f"{entry.to_region} ({entry.reason}, epoch {entry.epoch})"
                    )

    async def _display(self, redis: Client, settings: Settings) -> None:
        while not self.stop.is_set():
            self._draw(await gather_status(redis, settings))
            await self._pause(REFRESH_S)

    async def _kill_leader(self, redis: Client) -> None:
        lease = await read_lease(redis, self.keys)
        owner = lease.owner
        if owner is None:
            self.note("no leader to kill")
            return
        if not self.fleet.kill(owner.split("#", 1)[0]):
            self.note(f"leader {owner} is not one of ours")
            return
        killed_at = time.monotonic()
        take = Takeover(owner, lease.epoch, (lease.pttl_ms or 0) / 1000)
        self.takeover = take
        self.note(f"SIGKILL leader {owner} (lease {take.lease_left_s:.2f}s left)")
        deadline = killed_at + LEASE_TTL_MS / 1000 + 10
        while time.monotonic() < deadline and not self.stop.is_set():
            now = await read_lease(redis, self.keys)
            if now.owner is not None and now.owner != owner:
                took = time.monotonic() - killed_at
                self.takeover = msgspec.structs.replace(
                    take, new_leader=now.owner, new_epoch=now.epoch, takeover_s=took
                )
                self.note(f"TAKEOVER by {now.owner} after {took * 1000:.0f}ms")
                return
            await asyncio.sleep(0.005)
        self.note("no takeover within the lease TTL + 10s")

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the demo is being stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self.stop.wait()
        return self.stop.is_set()

    async def _script(self, redis: Client) -> None:
        if await self._pause(self.outage_at - self._t()):
            return
        self.outage = True
        self.note(f"OUTAGE: both observers now see {REGIONS[0]} unhealthy")
        if await self._pause(self.kill_at - self._t()):
            return
        await self._kill_leader(redis)
        if await self._pause(self.recover_at - self._t()):
            return
        self.outage = False
        self.note(f"{REGIONS[0]} recovers")
        await self._pause(self.seconds - self._t())

    # -- the run --------------------------------------------------------------------------

    def _interrupt(self) -> None:
        self.interrupted = True
        self.stop.set()

    async def run(self) -> int:
        """Set up, play the script, summarise; the exit code."""
        print(
            f"starting a private Redis, {len(COORDINATORS)} coordinators, an executor and"
            " its receiver ...",
            file=self.out,
        )
        url = self.fleet.start()
        # The fleet's own settings, so the report replays the policy exactly as it ran.
        settings = load_settings({**FLEET_ENV, "FAILOVER_REDIS_URL": url}, role="coordinator")
        redis = connect(url)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        try:
            if not await self.chain.start(lambda: self.interrupted):
                if self.interrupted:
                    return 130
                print("the receiver did not start within 20s", file=self.out)
                return 1
            deadline = time.monotonic() + 20
            while (await read_lease(redis, self.keys)).owner is None:
                if self.interrupted:
                    return 130
                if time.monotonic() > deadline:
                    print("no coordinator became leader within 20s", file=self.out)
                    return 1
                await asyncio.sleep(0.05)
            self.t0 = time.monotonic()
            # Every loop ends on `stop` rather than by cancellation: a cancel that lands
            # while redis-py sends a command can be swallowed on Python 3.11.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._observe(redis))
                group.create_task(self._follow(redis))
                group.create_task(self.chain.watch(redis, self.stop))
                group.create_task(self._display(redis, settings))
                await self._script(redis)
                if not self.interrupted:
                    await self._pause(0.3)  # let the last decisions arrive
                self.stop.set()
            if self.interrupted:
                return 130
            self._draw(await gather_status(redis, settings))
            receiver = await self.chain.receiver_state()
            code = self._summary(await gather_status(redis, settings), receiver)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = Path(tempfile.gettempdir()) / f"failover-demo-{stamp}.html"
            await write_report(redis, settings, path)
            print(f"  report:   {path} (open it in a browser)", file=self.out, flush=True)
            return code
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await redis.aclose()

    def _summary(self, report: StatusReport, receiver: dict[str, Any]) -> int:
        w = self.out
        print("\nsummary", file=w)
        print(
            f"  staged:   outage of {REGIONS[0]} at +{self.outage_at:.1f}s, leader SIGKILLed at"
            f" +{self.kill_at:.1f}s, {REGIONS[0]} recovered at +{self.recover_at:.1f}s",
            file=w,
        )
        ok = True
        if len(self.failovers) == 1:
            t, d = self.failovers[0]
            print(
                f"  decision: {d.decision_id} {d.from_region} -> {d.to_region} ({d.reason}),"
                f" {t - self.outage_at:.2f}s after the outage began, epoch {d.epoch}"
                f" by {d.leader}",
                file=w,
            )
            ok = ok and (d.from_region, d.to_region) == REGIONS[:2]
        else:
            print(f"  decision: expected 1 failover decision, saw {len(self.failovers)}", file=w)
            ok = False
        take = self.takeover
        if take is not None and take.takeover_s is not None:
            print(
                f"  takeover: {take.new_leader} (epoch {take.new_epoch}) took over"
                f" {take.takeover_s * 1000:.0f}ms after {take.killed} was killed"
                f" (its lease had {take.lease_left_s * 1000:.0f}ms left)",
                file=w,
            )
            ok = ok and take.new_epoch > take.killed_epoch
        else:
            print("  takeover: did not happen", file=w)
            ok = False
        ok = self.chain.summary(w, [d for _, d in self.failovers], receiver, REGIONS[1]) and ok
        active = report.summary.active_region if report.summary else None
        print(
            f"  final:    active {active}, {len(self.leaders)} leader_changed decisions,"
            f" {report.lag.dlq_length} dead letters, lag status {report.overall.status}",
            file=w,
        )
        ok = ok and active == REGIONS[1]
        print(f"  result:   {'OK' if ok else 'FAILED'}", file=w)
        w.flush()
        return 0 if ok else 1


def run_demo(seconds: int, out: TextIO | None = None) -> int:
    """Run the demo for ``seconds`` (at least 10); 0 on success, 1 on failure, 130 on Ctrl-C."""
    out = out or sys.stdout
    if seconds < MIN_SECONDS:
        print(f"failoverctl: demo --seconds must be at least {MIN_SECONDS}", file=sys.stderr)
        return 2
    try:
        find_server_binary()  # before printing anything: without one, one line says what to do
    except FileNotFoundError as exc:
        print(f"failoverctl: demo: {exc}", file=sys.stderr)
        return 1
    demo = Demo(seconds, out)
    code = 1
    try:
        code = asyncio.run(demo.run())
    except KeyboardInterrupt:  # before the demo's own handlers were installed
        code = 130
    except (FileNotFoundError, RuntimeError) as exc:  # no server binary, server did not start
        print(f"failoverctl: demo: {exc}", file=sys.stderr)
    finally:
        if code == 130:
            print("\ninterrupted: stopping every process", file=out)
        pids = demo.cleanup()
        if pids:
            print(f"  cleanup:  stopped pids {' '.join(map(str, pids))}", file=out, flush=True)
    return code
