"""redis-py's exceptions translated into the project's own (:mod:`schemas.errors`).

Code outside ``streams/`` catches only those: :class:`~schemas.errors.GroupMissing` for a
vanished consumer group, :class:`~schemas.errors.RedisRefused` for any other error reply
that trying again will not fix, :class:`~schemas.errors.RedisUnavailable` for an outage.
:func:`translated` lets a transient error (connection lost, LOADING, ...) pass unchanged:
it is :func:`streams.retry.call`'s to retry, and ``call`` raises RedisUnavailable
when it gives up. So translation may sit inside an operation ``call`` retries, or around it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.exceptions as rex

from schemas.errors import GroupMissing, RedisRefused, RedisUnavailable
from streams.retry import is_retriable


def translate(exc: BaseException) -> BaseException:
    """The project's error for a redis-py exception; any other exception unchanged.

    A transient one becomes RedisUnavailable (retriable).
    """
    if not isinstance(exc, rex.RedisError):
        return exc
    if isinstance(exc, rex.ResponseError) and (
        # A reader blocked on a stream that is deleted meanwhile is told so (Redis 7):
        # its group went with the stream.
        "NOGROUP" in str(exc) or "stream key no longer exists" in str(exc)
    ):
        return GroupMissing(str(exc))
    if is_retriable(exc):
        return RedisUnavailable(str(exc))
    return RedisRefused(str(exc))


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise a redis-py error leaving the block as the project's (chained); not a
    transient one, which stays for :func:`~streams.retry.call` to retry."""
    try:
        yield
    except rex.RedisError as exc:
        if is_retriable(exc):
            raise
        raise translate(exc) from exc
