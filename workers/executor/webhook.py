"""The webhook action: POST the decision JSON, signed, to ``FAILOVER_EXECUTOR_WEBHOOK_URL``.

The body is the decision's ``data`` exactly as the leader wrote it to ``NS:decisions``.
Headers carry the decision id (also as ``Idempotency-Key``), the epoch, the run (1, or more
when a crashed executor's action is sent again) and the HMAC-SHA256 signature of the body.
A 2xx answer is done; 408, 429, 5xx, a refused or dropped connection and a timeout are
retried; any other answer (4xx, a redirect: not followed) is a permanent failure.
"""

from __future__ import annotations

from types import TracebackType

import aiohttp

from schemas.events import FailoverDecision
from streams.address import redact
from workers.executor.outcome import Outcome, Permanent, Transient, with_retries
from workers.executor.signature import (
    DECISION_ID_HEADER,
    EPOCH_HEADER,
    HEADER,
    RUN_HEADER,
    sign,
)

_RETRIED_STATUSES = (408, 429)
_ANSWER_LIMIT = 200


class WebhookAction:
    """Calls one URL per decision; use as ``async with`` (it owns an HTTP session)."""

    def __init__(
        self, url: str, secret: str, *, attempts: int, timeout_s: float, backoff_s: float
    ) -> None:
        self.url = url
        self._secret = secret
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        """Names the URL (password masked), never the secret."""
        return f"WebhookAction({redact(self.url)!r})"

    async def __aenter__(self) -> WebhookAction:
        """Open the HTTP session."""
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def __call__(self, decision: FailoverDecision, body: bytes, run: int) -> Outcome:
        """POST ``body`` (the decision's JSON) until done, refused for good, or out of tries."""
        headers = {
            "Content-Type": "application/json",
            DECISION_ID_HEADER: decision.decision_id,
            "Idempotency-Key": decision.decision_id,
            EPOCH_HEADER: str(decision.epoch),
            RUN_HEADER: str(run),
            HEADER: sign(self._secret, body),
        }

        async def post() -> str:
            if self._session is None:
                raise RuntimeError("WebhookAction used outside `async with`")
            try:
                async with self._session.post(
                    self.url, data=body, headers=headers, allow_redirects=False
                ) as answer:
                    text = (await answer.text(errors="replace"))[:_ANSWER_LIMIT].strip()
                    status = answer.status
            except aiohttp.ClientError as exc:
                raise Transient(f"POST {self.url}: {type(exc).__name__}: {exc}") from None
            said = f"HTTP {status}" + (f": {text}" if text else "")
            if 200 <= status < 300:
                return said
            if status >= 500 or status in _RETRIED_STATUSES:
                raise Transient(said)
            raise Permanent(said)

        return await with_retries(
            post,
            attempts=self.attempts,
            timeout_s=self.timeout_s,
            backoff_s=self.backoff_s,
            what=f"webhook {decision.decision_id}",
        )
