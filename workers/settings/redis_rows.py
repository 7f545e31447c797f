"""The rows of the Redis connection: URL, namespace, TLS files and Sentinel.

Three blocks, each placed in the table by :mod:`workers.settings.table`.
"""

from __future__ import annotations

from streams.address import parse_sentinels
from workers.settings.setting import EVERY, no_space, text_row


def _sentinel_list(text: str) -> bool:
    try:
        parse_sentinels(text)
    except ValueError:
        return False
    return True


ADDRESS_ROWS = (
    text_row(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "`redis://`, `rediss://` (TLS) or `unix://` URL, with ACL user/password if any"
        " (never logged: shown as `***`)",
        EVERY,
        kind="url",
    ),
    text_row(
        "NAMESPACE",
        "failover",
        "key prefix `NS`; use a hash tag (`{failover}`) on Redis Cluster",
        EVERY,
        check=no_space(128),
        rule="must be non-empty, without spaces, at most 128 characters",
    ),
)

TLS_ROWS = (
    text_row(
        "REDIS_TLS_CA",
        "",
        "PEM file of the CA that signed the Redis server's certificate (`rediss://` only;"
        " verification is always on); same as the URL parameter `ssl_ca_certs`",
        EVERY,
    ),
    text_row(
        "REDIS_TLS_CERT",
        "",
        "PEM client certificate for Redis's `tls-auth-clients` (with `FAILOVER_REDIS_TLS_KEY`)",
        EVERY,
    ),
    text_row(
        "REDIS_TLS_KEY",
        "",
        "PEM private key of `FAILOVER_REDIS_TLS_CERT`",
        EVERY,
    ),
)

# Replicated Redis (DESIGN §4 v2).
SENTINEL_ROWS = (
    text_row(
        "REDIS_SENTINELS",
        "",
        "comma-separated Sentinel `host:port` list: find the primary through Sentinel and"
        " follow promotions (user, password, db and TLS still from `FAILOVER_REDIS_URL`,"
        " whose host is then unused); empty = the URL's host",
        EVERY,
        check=_sentinel_list,
        rule="must be a comma-separated list of host:port",
    ),
    text_row(
        "REDIS_SENTINEL_MASTER",
        "mymaster",
        "the primary's name in the Sentinels' `sentinel monitor`",
        EVERY,
        check=no_space(128),
        rule="must be non-empty, without spaces, at most 128 characters",
    ),
    text_row("REDIS_SENTINEL_USERNAME", "", "ACL user for the Sentinels (if they need one)", EVERY),
    text_row(
        "REDIS_SENTINEL_PASSWORD",
        "",
        "password for the Sentinels (`requirepass` / ACL; never appears in logs)",
        EVERY,
        kind="secret",
    ),
)
