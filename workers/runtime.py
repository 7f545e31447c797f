"""One process lifecycle for every long-running entry point: :func:`run`.

``run(role, amain)`` is all a process's ``main()`` does. It

- answers ``--help`` / ``-h`` with the role's settings help (exit 0); other arguments are a
  usage error (exit 2);
- loads the role's settings; every bad value is one line on stderr, ``<role>: FAILOVER_X:
  rule``, and the process exits 2 (so does a :class:`ConfigError` raised by ``amain``);
- sets up logging, one format for every process: text lines
  ``2026-11-29T08:17:22.123Z INFO workers.x message`` (UTC, millisecond precision), or one
  JSON object per line with ``FAILOVER_LOG_FORMAT=json``; level ``FAILOVER_LOG_LEVEL``
  (default INFO);
- on a Redis Cluster, refuses a namespace without a hash tag (one line, exit 2; see
  :mod:`workers.namespace_guard`);
- runs ``amain(settings, stop)``; SIGTERM and SIGINT set ``stop``, and ``amain`` returns
  once it has wound down (``None`` means exit 0);
- bounds the shutdown: ``amain`` gets ``FAILOVER_SHUTDOWN_TIMEOUT_MS`` after the first
  signal. Near the end of it the work is cancelled; if even that hangs (a blocked event
  loop, a library that swallows cancellation) a watchdog thread ends the process with
  exit 0 when the timeout runs out. Abandoning work is safe by design: a commit is one
  script, applied whole or not at all, and an unreleased lease expires on its own;
- a **second** signal exits at once with ``128 + signal number`` (130 for Ctrl-C twice),
  for an operator who does not want to wait;
- writes this process's heartbeat ``NS:members:<owner>`` every
  ``FAILOVER_HEARTBEAT_INTERVAL_MS`` (TTL three intervals; :class:`Membership`) with the
  leader and epoch it sees, and removes it on a clean exit, so ``failoverctl members``
  lists the fleet and names the processes that went missing;
- maps failures to exit codes: :class:`RedisUnavailable` / ``KafkaUnavailable`` (and any
  other :class:`FailoverError` that escapes, e.g. an unreadable committed state) are one
  line on stderr with passwords redacted, exit 1; a :class:`ConfigError` at any time
  (settings that disagree with the committed state too) is exit 2. Anything else is a bug:
  logged with its traceback, exit 70 (``EX_SOFTWARE``), so a supervisor and a reader of
  the logs can tell it from an outage or a bad setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NoReturn, TextIO

from schemas.errors import ConfigError, FailoverError, RedisRefused, RedisUnavailable
from streams.errors import translate
from workers.membership import Membership, current_membership, set_membership
from workers.namespace_guard import guarded
from workers.settings import Settings, help_text, load_settings

__all__ = ["Membership", "current_membership"]

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_CONFIG = 2
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE: an internal error, not an outage or a bad setting

# The share of the shutdown timeout the work gets to finish on its own before it is
# cancelled; the rest is for the cancellation to unwind (close connections, log).
_GRACE_SHARE = 0.8
_SECRET_IN_URL = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")

AsyncMain = Callable[[Settings, asyncio.Event], Awaitable[int | None]]

log = logging.getLogger("workers.runtime")


# -- logging ------------------------------------------------------------------------------


def _utc(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``<UTC time>Z LEVEL logger message``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        """One line per record (plus the traceback lines of an exception)."""
        line = f"{_utc(record)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Fields of every JSON line that say who wrote it: role and instance (set by run), owner
# and epoch (set by a coordinator while they apply). See log_context.
_CONTEXT: dict[str, object] = {}
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def log_context(**fields: object) -> None:
    """Set (or with None, remove) fields added to every JSON log line of this process."""
    for name, value in fields.items():
        if value is None:
            _CONTEXT.pop(name, None)
        else:
            _CONTEXT[name] = value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC), ``level``, ``role``, ``instance``, ``owner``,
    ``epoch`` (when known), ``logger``, ``message``, any ``extra=`` fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, object] = {"ts": _utc(record), "level": record.levelname}
        out.update(_CONTEXT)
        out["logger"] = record.name
        out["message"] = record.getMessage()
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and not name.startswith("_"):
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(
    level: str | int,
    fmt: str,
    *,
    quiet: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Send every log record to stderr in the one process format; ``quiet`` loggers at WARNING."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


# -- errors -------------------------------------------------------------------------------


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it masked (``scheme://user:***@``)."""
    return _SECRET_IN_URL.sub(r"\1***@", text)


def say(role: str, lines: str | Iterable[str]) -> None:
    """Print ``<role>: line`` on stderr for each line, passwords redacted (not a log record)."""
    for line in [lines] if isinstance(lines, str) else lines:
        print(redact_text(f"{role}: {line}"), file=sys.stderr, flush=True)


def redis_refusal(exc: BaseException) -> FailoverError | None:
    """The project's error for a Redis error that reached the top (a wrong password, a
    missing ACL grant, a certificate that does not verify, a bad database): an answer of
    the server's or the network's, not a bug, so one line and exit 1, never a traceback."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    translated = translate(exc)
    return translated if isinstance(translated, FailoverError) else None


def unavailable_line(exc: FailoverError, redis_url: str | None) -> str:
    """The one line that reports an outage (or another deliberate error) that ends a process."""
    if isinstance(exc, RedisUnavailable) and redis_url:
        return f"cannot reach Redis at {redis_url}: {exc}"
    if isinstance(exc, RedisRefused) and redis_url:
        return f"Redis at {redis_url} refused: {exc}"
    return str(exc)  # KafkaUnavailable names the brokers itself


# -- the lifecycle ------------------------------------------------------------------------


def run(
    role: str,
    amain: AsyncMain,
    argv: Sequence[str] | None = None,
    *,
    quiet: Iterable[str] = (),
) -> NoReturn:
    """Run one process of ``role`` around ``amain`` and exit with its code (see module doc).

    ``quiet`` names chatty client-library loggers to hold at WARNING.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(help_text(role))
        sys.exit(EXIT_OK)
    if args:
        say(role, f"unexpected arguments {' '.join(args)!r}: settings come from FAILOVER_*")
        say(role, "see --help")
        sys.exit(EXIT_CONFIG)
    try:
        settings = load_settings(role=role)
    except ConfigError as exc:
        say(role, str(exc).splitlines())
        sys.exit(EXIT_CONFIG)
    configure_logging(settings.log_level, settings.log_format, quiet=quiet)
    log_context(role=role, instance=settings.instance_id)
    try:
        code = asyncio.run(_lifecycle(role, amain, settings))
    except ConfigError as exc:
        say(role, str(exc).splitlines())
        code = EXIT_CONFIG
    except FailoverError as exc:
        say(role, unavailable_line(exc, settings.redacted_url))
        code = EXIT_UNAVAILABLE
    except Exception as exc:
        refused = redis_refusal(exc)
        if refused is None:
            log.exception("%s crashed: this is a bug", role)
            code = EXIT_BUG
        else:
            say(role, unavailable_line(refused, settings.redacted_url))
            code = EXIT_UNAVAILABLE
    logging.shutdown()
    sys.exit(code)


async def _lifecycle(role: str, amain: AsyncMain, settings: Settings) -> int:
    membership = set_membership(Membership(role, settings))
    heartbeat = asyncio.create_task(membership.run(), name="heartbeat")
    try:
        code = await _supervise(role, amain, settings)
    except BaseException:
        await membership.close(leave=False)  # a crash: it shows as missing, rightly
        raise
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    await membership.close(leave=code == EXIT_OK)
    return code


async def _supervise(role: str, amain: AsyncMain, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    timeout_s = settings.shutdown_timeout_ms / 1000

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now, work abandoned", sig.name)
            exit_now(128 + sig.value)
        log.info(
            "received %s: stopping %s (at most %sms)", sig.name, role, settings.shutdown_timeout_ms
        )
        stop.set()
        _watchdog(timeout_s)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    async def main() -> int | None:
        # On a Redis Cluster an untagged namespace is a bad setting: exit 2 before work.
        return await guarded(settings, lambda: amain(settings, stop))

    work = asyncio.create_task(main(), name=f"{role}-main")
    stopped = asyncio.create_task(stop.wait(), name="stop-requested")
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            done, _ = await asyncio.wait({work}, timeout=timeout_s * _GRACE_SHARE)
            if not done:
                log.warning(
                    "%s did not stop within %.0fms: cancelling its work",
                    role,
                    timeout_s * _GRACE_SHARE * 1000,
                )
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return EXIT_OK
        code = work.result()
        log.info("%s stopped", role)
        return EXIT_OK if code is None else code
    finally:
        stopped.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _watchdog(timeout_s: float) -> None:
    """End the process at ``timeout_s`` from now, whatever the event loop is doing."""

    def fire() -> None:
        log.error("shutdown timeout of %.0fms reached: exiting now", timeout_s * 1000)
        exit_now(EXIT_OK)

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()


def exit_now(code: int) -> NoReturn:
    # os._exit skips interpreter teardown, which is exactly what may hang; flush first.
    with contextlib.suppress(Exception):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


# -- helpers for the processes' own loops -------------------------------------------------


async def every(
    interval_s: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]]
) -> None:
    """Await ``step`` every ``interval_s`` on the monotonic clock until ``stop`` is set.

    A slow step delays the next one instead of piling up, and ``stop`` ends the wait at
    once rather than after the interval.
    """
    next_at = time.monotonic()
    while not stop.is_set():
        await step()
        next_at = max(next_at + interval_s, time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(next_at - time.monotonic()):
                await stop.wait()


class OutageLog:
    """Log a recurring failure (Redis unreachable) at most once per ``interval_s``, counted.

    The first failure is logged at once; repeats within the interval are only counted and
    the next line says how many there were; :meth:`recovered` logs the end of the outage
    with its length. One per process (:data:`redis_outage`), so an outage writes one line
    per 10 s per process however many loops see it.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.failures = 0
        self._since: float | None = None
        self._logged_at: float | None = None
        self._unlogged = 0

    def failed(self, logger: logging.Logger, what: str, exc: BaseException) -> None:
        """Record one failure of ``what``; log it if the last line is old enough."""
        now = time.monotonic()
        self.failures += 1
        if self._since is None:
            self._since = now
        if self._logged_at is not None and now - self._logged_at < self.interval_s:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more failures since the last line)" if self._unlogged else ""
        outage_s = now - self._since
        logger.warning("%s failed: %s; Redis unavailable for %.1fs%s", what, exc, outage_s, more)
        self._logged_at = now
        self._unlogged = 0

    def recovered(self, logger: logging.Logger) -> None:
        """Call after a success: logs the end of an outage once (nothing if there was none)."""
        if self._since is None:
            return
        logger.info(
            "Redis reachable again after %.1fs (%d failed attempts)",
            time.monotonic() - self._since,
            self.failures,
        )
        self._since = None
        self._logged_at = None
        self._unlogged = 0
        self.failures = 0


redis_outage = OutageLog()
"""The process's one outage log for Redis (see :class:`OutageLog`)."""
