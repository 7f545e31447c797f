"""The command action: run ``FAILOVER_EXECUTOR_COMMAND`` once per decision.

The command line is split like a shell would (``shlex``) but run without one. The decision
JSON is on its stdin; ``FAILOVER_DECISION_ID``, ``FAILOVER_EPOCH``, ``FAILOVER_FROM_REGION``,
``FAILOVER_TO_REGION`` and ``FAILOVER_RUN`` are in its environment, and none of the
executor's own ``FAILOVER_*`` settings (the Redis URL and the webhook secret stay with the
executor). Exit 0 is done, exit 2 a permanent failure, anything else (or a timeout, after
which the command's whole process group is killed) is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal

from schemas.events import FailoverDecision
from workers.executor.outcome import DETAIL_LIMIT, Outcome, Permanent, Transient, with_retries

EXIT_PERMANENT = 2


def command_env(decision: FailoverDecision, run: int) -> dict[str, str]:
    """The environment a command runs with: ours without FAILOVER_*, plus the decision."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env.update(
        FAILOVER_DECISION_ID=decision.decision_id,
        FAILOVER_EPOCH=str(decision.epoch),
        FAILOVER_FROM_REGION=decision.from_region,
        FAILOVER_TO_REGION=decision.to_region,
        FAILOVER_RUN=str(run),
    )
    return env


class CommandAction:
    """Runs one command line per decision."""

    def __init__(self, command: str, *, attempts: int, timeout_s: float, backoff_s: float) -> None:
        self.argv = shlex.split(command)
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s

    def __repr__(self) -> str:
        """Names the program only (arguments may hold tokens)."""
        return f"CommandAction({self.argv[0]!r})"

    async def __aenter__(self) -> CommandAction:
        """Nothing to open; symmetric with the webhook action."""
        return self

    async def __aexit__(self, *_: object) -> None:
        """Nothing to close."""

    async def __call__(self, decision: FailoverDecision, body: bytes, run: int) -> Outcome:
        """Run the command until it exits 0, exits 2, or the attempts run out."""
        env = command_env(decision, run)

        async def execute() -> str:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=env,
                    start_new_session=True,  # so a timeout can kill its children too
                )
            except OSError as exc:  # not found, not executable: no retry will fix it
                raise Permanent(f"cannot run {self.argv[0]!r}: {exc.strerror}") from None
            try:
                out, err = await proc.communicate(body)
            except BaseException:  # timeout or cancellation: leave nothing running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                raise
            said = (err or out).decode(errors="replace").strip()[-DETAIL_LIMIT:]
            line = f"exit {proc.returncode}" + (f": {said}" if said else "")
            if proc.returncode == 0:
                return line
            if proc.returncode == EXIT_PERMANENT:
                raise Permanent(line)
            raise Transient(line)

        return await with_retries(
            execute,
            attempts=self.attempts,
            timeout_s=self.timeout_s,
            backoff_s=self.backoff_s,
            what=f"command {decision.decision_id}",
        )
