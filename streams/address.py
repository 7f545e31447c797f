"""Where Redis is: URL validation and redaction, TLS file parameters, the Sentinel target.

Nothing here talks to Redis; :func:`streams.connection.connect` builds the client from a
:class:`RedisTarget`.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from schemas.errors import ConfigError

# The query parameters a Redis URL may carry (README, "TLS"). redis-py would hand any other
# one to its connection class and fail at the first command, with a traceback.
URL_PARAMS = (
    "db",
    "username",
    "password",
    "protocol",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_check_hostname",
    "ssl_cert_reqs",
)
_FILE_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")

# Query parameters that may carry a secret (redis-py accepts ``?password=``).
_SECRET_PARAMS = ("pass", "secret", "token", "auth", "key")


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(any(word in name.lower() for word in _SECRET_PARAMS) for name, _ in pairs):
        return query
    return urlencode(
        [
            (name, "***" if any(word in name.lower() for word in _SECRET_PARAMS) else value)
            for name, value in pairs
        ],
        safe="*",
    )


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors).

    Also masks secret-looking query parameters (``?password=``), and when an ``@`` sits
    outside the part a parser reads as user:password@host (no scheme, or a ``/``, ``?`` or
    ``#`` inside the password), everything before the last ``@``: a mistyped URL must not
    leak its password either.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    if "@" in rest or ("@" in url and "@" not in parts.netloc):
        tail = url.rpartition("@")[2]
        head, mark, query = tail.partition("?")
        return "***@" + head + (mark + _redact_query(query) if mark else "")
    netloc = parts.netloc
    if "@" in netloc:
        # Rebuild from the raw netloc so an invalid port cannot make redaction itself fail.
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{hostport}"
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def validate_url(url: str) -> None:
    """Raise ConfigError unless ``url`` is a usable redis://, rediss:// or unix:// URL."""
    # Messages never quote the parser's exception: it can echo the raw netloc, password and all.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed URL {redact(url)!r}: it cannot be parsed") from None
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"malformed URL {redact(url)!r}: the port must be a number from 1 to 65535"
        ) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"URL {redact(url)!r} must start with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        # unix://[user:password@]/path/to/socket[?db=N]: the path is the socket, not a db.
        if not parts.path:
            raise ConfigError(f"URL {redact(url)!r} has no socket path")
        return
    if not parts.hostname:
        raise ConfigError(f"URL {redact(url)!r} has no host")
    if port == 0:
        raise ConfigError(f"URL {redact(url)!r} has port 0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        # The path is not quoted back: in a mistyped URL it may hold part of a password.
        raise ConfigError(f"URL {redact(url)!r}: the database (the path) must be a number")
    _check_params(url, parts.scheme, parse_qsl(parts.query, keep_blank_values=True))


def _check_params(url: str, scheme: str, params: list[tuple[str, str]]) -> None:
    """Refuse unknown query parameters, TLS ones without ``rediss://``, verification
    turned off, and certificate files that cannot be read."""
    shown = redact(url)
    for name, value in params:
        if name not in URL_PARAMS:
            raise ConfigError(
                f"URL {shown!r}: unknown parameter {name!r} (allowed: {', '.join(URL_PARAMS)})"
            )
        if name.startswith("ssl_") and scheme != "rediss":
            raise ConfigError(f"URL {shown!r}: {name} needs a rediss:// (TLS) URL")
        if name == "ssl_cert_reqs" and value.lower() != "required":
            raise ConfigError(
                f"URL {shown!r}: ssl_cert_reqs={value} would stop verifying the server's"
                " certificate; give its CA instead (FAILOVER_REDIS_TLS_CA or ssl_ca_certs)"
            )
        if name == "ssl_check_hostname" and value.lower() not in ("true", "false"):
            raise ConfigError(f"URL {shown!r}: ssl_check_hostname must be true or false")
        if name == "protocol" and value not in ("2", "3"):
            raise ConfigError(f"URL {shown!r}: protocol must be 2 or 3")
        if name == "db" and not value.isdigit():
            raise ConfigError(f"URL {shown!r}: db must be a number")
        if name in _FILE_PARAMS and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise ConfigError(f"URL {shown!r}: {name}: no readable file at {value!r}")
        if name == "ssl_ca_path" and not os.path.isdir(value):
            raise ConfigError(f"URL {shown!r}: ssl_ca_path: no directory at {value!r}")


def with_tls_files(url: str, ca: str, cert: str, key: str) -> str:
    """``url`` with the given CA / client certificate / key files as its TLS parameters."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in (("ssl_ca_certs", ca), ("ssl_certfile", cert), ("ssl_keyfile", key)):
        if value:
            params = [(n, v) for n, v in params if n != name] + [(name, value)]
    query = urlencode(params, safe="/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class RedisTarget(msgspec.Struct, frozen=True):
    """Where Redis is: a URL, or the primary Sentinel names (user, password, db and TLS
    still from the URL, whose host and port are then unused)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_username: str = ""
    sentinel_password: str = ""

    def __repr__(self) -> str:
        """The target with its passwords masked (it gets logged)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        if not hosts:
            return f"RedisTarget({redact(self.url)!r})"
        return (
            f"RedisTarget({redact(self.url)!r}, sentinels={hosts}, master={self.sentinel_master})"
        )

    def describe(self) -> str:
        """One phrase for logs and error lines: the URL, or the sentinels and master name."""
        if not self.sentinels:
            return redact(self.url)
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel master {self.sentinel_master!r} via {hosts} ({redact(self.url)})"


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` as pairs; ValueError naming the first bad item."""
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        host, colon, port = item.rpartition(":")
        host = host.strip("[]")  # [::1]:26379
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        out.append((host, int(port)))
    if not out:
        raise ValueError("no sentinel given")
    return tuple(out)
