"""The namespace check every process makes once: on a Redis Cluster it must be hash-tagged.

Untagged, its keys hash to different slots and the first script or transaction fails with
``CROSSSLOT``; a process says so at startup instead, in one line, and exits 2 (a bad
setting). :func:`guarded` runs the check beside the process's work: it normally answers
within milliseconds, before the work starts; while Redis is unreachable the work starts
anyway (it reports the outage its own way) and the check keeps trying until it has an
answer, ending the work if that answer is a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from schemas.errors import ConfigError, FailoverError, RedisUnavailable
from streams.cluster import check_namespace, hash_tag
from streams.connection import connect
from streams.retry import call
from workers.settings import Settings

log = logging.getLogger("workers.namespace_guard")

T = TypeVar("T")

# How long the work waits for the check before it starts anyway (Redis unreachable).
_HEAD_START_S = 2.0
_RETRY_S = 1.0


async def check(settings: Settings) -> None:
    """Ask Redis until it answers; :class:`ConfigError` if it is a cluster and the namespace
    has no hash tag. Any other refusal is left to the work to report."""
    if hash_tag(settings.namespace) is not None:
        return  # tagged: fine on a cluster and on a single server alike
    redis = connect(settings.redis_target, client_name="namespace-check")
    try:
        while True:
            try:
                await call(
                    lambda: check_namespace(redis, settings.namespace),
                    what="namespace check",
                    deadline_s=_RETRY_S,
                )
                return
            except RedisUnavailable as exc:
                log.debug("namespace check: Redis unreachable, trying again: %s", exc)
            except ConfigError:
                raise
            except FailoverError as exc:
                log.debug("namespace check: Redis refused, left to the work: %s", exc)
                return
            await asyncio.sleep(_RETRY_S)
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def guarded(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` once the namespace check answered (or after a head start), and end it
    if the check refuses the namespace; returns what ``work`` returns."""
    checking = asyncio.create_task(check(settings), name="namespace-check")
    running: asyncio.Task[T] | None = None
    try:
        await asyncio.wait({checking}, timeout=_HEAD_START_S)
        if checking.done():
            checking.result()  # a refusal raises here, before any work
        running = asyncio.ensure_future(work())
        pending: set[asyncio.Task[Any]] = {checking, running}
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if checking in done:
                checking.result()
            if running in done:
                return running.result()
    finally:
        for task in (checking, running):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
