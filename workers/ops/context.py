"""What every ``failoverctl`` command gets (:class:`Context`), and the exit codes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from streams.connection import Client, connect
from streams.keys import Keys
from streams.retry import call
from workers.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Context:
    """What every command gets: settings, key names, a lazily opened client, the output."""

    def __init__(self, settings: Settings, args: argparse.Namespace, out: TextIO) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.args = args
        self.out = out
        self.deadline_s: float = args.timeout
        self._redis: Client | None = None

    @property
    def redis(self) -> Client:
        """The client, created on first use."""
        if self._redis is None:
            timeout = max(0.1, min(self.deadline_s, 2.0))
            self._redis = connect(self.settings.redis_target, socket_timeout=timeout)
        return self._redis

    async def io(self, op: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run one Redis operation under the retry policy and the command's deadline."""
        return await call(op, what=what, deadline_s=self.deadline_s)

    def print(self, text: str = "") -> None:
        """Write one line (flushed: follow mode is often piped)."""
        print(text, file=self.out, flush=True)

    def emit_json(self, data: object) -> None:
        """Write one JSON document on one line."""
        self.print(json.dumps(data, default=str))

    async def close(self) -> None:
        """Close the client if one was opened."""
        if self._redis is not None:
            await self._redis.aclose()


def iso(at: float) -> str:
    """Unix seconds as an ISO 8601 UTC time, to the millisecond."""
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")
