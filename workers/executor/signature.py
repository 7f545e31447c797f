"""The webhook signature: HMAC-SHA256 of the exact request body with the shared secret.

Sent as ``X-Failover-Signature: sha256=<hex>`` (the GitHub webhook convention), so a
receiver authenticates the decision before it trusts its epoch or its target.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Failover-Signature"
DECISION_ID_HEADER = "X-Failover-Decision-Id"
EPOCH_HEADER = "X-Failover-Epoch"
RUN_HEADER = "X-Failover-Run"
_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The ``X-Failover-Signature`` value of ``body`` under ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """True if ``signature`` is ``body``'s under ``secret`` (constant-time comparison)."""
    if not secret or not signature:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode())
