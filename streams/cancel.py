"""The one workaround for cancellations that Python 3.11 loses inside redis-py.

redis-py sends every command through ``asyncio.wait_for`` when a socket timeout is set, and
3.11's ``wait_for`` returns normally -- dropping the cancellation -- when the outer task is
cancelled in the same loop iteration as the send completes (CPython gh-86296, fixed in
3.12). A cancelled task can thus carry on as if nothing happened, at any Redis command, not
only long blocking ones. The task's ``cancelling()`` count still remembers the request, so
code that talks to Redis re-raises it (:func:`reraise_lost_cancel`, also done by
:func:`streams.retry.call` after every operation), and code that stops tasks cancels
again until they have ended (:func:`cancel_and_wait`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def reraise_lost_cancel(baseline: int = 0) -> None:
    """Raise CancelledError if the current task was cancelled but the cancel got lost.

    ``baseline`` is the ``cancelling()`` count the caller started from: non-zero in code
    that runs while handling an earlier cancellation.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > baseline:
        raise asyncio.CancelledError


async def cancel_and_wait(*tasks: asyncio.Task[Any], grace_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until every one of them has finished.

    A task still running ``grace_s`` after its cancel is cancelled again (with a warning),
    and again: a lost cancel would otherwise leave the caller waiting forever. Exceptions
    stay on the tasks for the caller to inspect; they are marked retrieved, none is raised.
    """
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=grace_s)
        for task in pending:
            log.warning("task %s ignored its cancellation; cancelling it again", task.get_name())
            task.cancel()
    for task in tasks:
        if not task.cancelled():
            task.exception()
