"""The one table of ``FAILOVER_*`` settings: each variable's type, default, bounds, unit, help
and the roles (processes) that read it.

The loader (:mod:`workers.settings.loader`), every process's ``--help`` and the README
configuration table (:mod:`workers.settings.docs`) are all produced from :data:`TABLE`; a
default or a bound is written here and nowhere else, derived defaults included. The rules
that relate several variables are in :mod:`workers.settings.rules`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

import msgspec

from streams.connection import parse_sentinels

PREFIX = "FAILOVER_"
MIN_REELECT_MS = 1000
# Upper bound for most durations: a day is already absurd for a lease or a window, and a
# larger value would only fail later, inside Redis (PEXPIRE) or the event loop, far from its
# cause.
MAX_DURATION_MS = 86_400_000
HOUR_MS = 3_600_000

# The process roles. A new process (e.g. an executor) adds its name here and to the rows it
# reads; ``ALL`` is the pseudo-role of tools and tests that want every variable at once.
COORDINATOR, PROBER, LAGMON = "coordinator", "prober", "lagmon"
BRIDGE, MIRROR, OPERATOR = "bridge", "mirror", "operator"
EXECUTOR = "executor"
ROLES = (COORDINATOR, PROBER, LAGMON, BRIDGE, MIRROR, OPERATOR, EXECUTOR)
ALL = "all"
ROLE_KEY = "ROLE"
"""The loader passes the role being loaded to derived defaults under this key."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

Kind = Literal[
    "int", "text", "bool", "choice", "secret", "url", "regions", "targets", "fraction", "names"
]
Values = Mapping[str, Any]


class Derived(msgspec.Struct, frozen=True):
    """A default computed from other values (keyed by variable name) when a variable is unset."""

    text: str
    compute: Callable[[Values], Any]


class Setting(msgspec.Struct, frozen=True):
    """One row of the table: one ``FAILOVER_<env>`` variable and the field it fills."""

    env: str
    field: str
    kind: Kind
    default: Any
    help: str
    roles: frozenset[str]
    minimum: int | None = None
    maximum: int | None = None
    unit: str = ""
    required: frozenset[str] = frozenset()
    choices: tuple[str, ...] = ()
    check: Callable[[str], bool] | None = None
    rule: str = ""

    @property
    def name(self) -> str:
        """The full environment variable name."""
        return PREFIX + self.env

    def reads(self, role: str) -> bool:
        """True if processes of ``role`` read this variable."""
        return role == ALL or role in self.roles

    def requires(self, role: str) -> bool:
        """True if processes of ``role`` refuse to start without this variable."""
        return role in self.required

    @property
    def hint(self) -> str:
        """The first clause of the help, as plain text (for "is required" messages)."""
        return self.help.split(";", 1)[0].replace("`", "").strip()


def check_role(role: str) -> None:
    """Refuse a role name the table does not know (a typo would silently read nothing)."""
    if role != ALL and role not in ROLES:
        raise ValueError(f"unknown settings role {role!r}; one of {', '.join(ROLES)}")


def _field(env: str) -> str:
    for group in ("KAFKA_", "EXECUTOR_"):  # sub-structs of Settings: settings.kafka.x, ...
        if env.startswith(group):
            return f"{group[:-1].lower()}.{env[len(group) :].lower()}"
    return env.lower()


def _int(
    env: str, default: Any, bounds: tuple[int, int, str], help: str, roles: Collection[str]
) -> Setting:
    lo, hi, unit = bounds
    return Setting(env, _field(env), "int", default, help, frozenset(roles), lo, hi, unit)


def _text(env: str, default: Any, help: str, roles: Collection[str], **kw: Any) -> Setting:
    kind = kw.pop("kind", "text")
    return Setting(env, _field(env), kind, default, help, frozenset(roles), **kw)


def _no_space(limit: int, *banned: str) -> Callable[[str], bool]:
    return lambda v: (
        not any(c.isspace() for c in v) and not any(b in v for b in banned) and (len(v) <= limit)
    )


def _ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_C = frozenset({COORDINATOR})
_CO = frozenset({COORDINATOR, OPERATOR})
_LONG_RUNNING = frozenset({COORDINATOR, PROBER, LAGMON, BRIDGE, MIRROR, EXECUTOR})
_EVERY = _LONG_RUNNING | {OPERATOR}
_KAFKA = frozenset({BRIDGE, MIRROR})
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _sentinel_list(text: str) -> bool:
    try:
        parse_sentinels(text)
    except ValueError:
        return False
    return True


_X = frozenset({EXECUTOR})
# The executor's rows (DESIGN §8b): its group and its one action, with bounds on each try.
EXECUTOR_ROWS = (
    _text(
        "EXECUTOR_GROUP",
        "executor",
        "the executor's consumer group on `NS:decisions`: one per kind of executor; processes"
        " of one kind share it and each decision is carried out once per group",
        _X,
        check=_no_space(64, ":"),
        rule="must be non-empty, without spaces or ':', at most 64 characters",
    ),
    _text(
        "EXECUTOR_WEBHOOK_URL",
        "",
        "`http(s)://` URL the executor POSTs each failover decision to, signed (set this or"
        " `FAILOVER_EXECUTOR_COMMAND`)",
        _X,
        check=lambda v: v.startswith(("http://", "https://")) and _no_space(2048)(v),
        rule="must be an http:// or https:// URL without spaces",
    ),
    _text(
        "EXECUTOR_WEBHOOK_SECRET",
        "",
        "HMAC-SHA256 key of the webhook signature; required with a webhook (never logged)",
        _X,
        kind="secret",
    ),
    _text(
        "EXECUTOR_COMMAND",
        "",
        "command run once per failover decision: the decision JSON on stdin,"
        " `FAILOVER_DECISION_ID` / `_EPOCH` / `_FROM_REGION` / `_TO_REGION` in its"
        " environment; exit 0 = done, 2 = failed for good, else retried",
        _X,
    ),
    _int(
        "EXECUTOR_TIMEOUT_MS",
        10000,
        (10, 600_000, "ms"),
        "one attempt of the action, at most (then it counts as failed, and is retried)",
        _X,
    ),
    _int(
        "EXECUTOR_ATTEMPTS",
        5,
        (1, 100, ""),
        "attempts per decision on failures that may pass (refused connection, 5xx, timeout,"
        " exit code other than 0 and 2); 4xx and exit 2 are not retried",
        _X,
    ),
    _int(
        "EXECUTOR_BACKOFF_MS",
        500,
        (0, 60_000, "ms"),
        "wait before the first retry, doubled each time up to 16 times this",
        _X,
    ),
    _int(
        "EXECUTOR_CLAIM_IDLE_MS",
        10000,
        (100, MAX_DURATION_MS, "ms"),
        "a stopped executor's undone decisions are taken over by another of its group after"
        " this; one it had started is sent again only once all its attempts could be over",
        _X,
    ),
)

TABLE: tuple[Setting, ...] = (
    _text(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "`redis://`, `rediss://` (TLS) or `unix://` URL, with ACL user/password if any"
        " (never logged: shown as `***`)",
        _EVERY,
        kind="url",
    ),
    _text(
        "NAMESPACE",
        "failover",
        "key prefix `NS`; use a hash tag (`{failover}`) on Redis Cluster",
        _EVERY,
        check=_no_space(128),
        rule="must be non-empty, without spaces, at most 128 characters",
    ),
    _text(
        "REGIONS",
        (),
        "comma-separated regions in priority order; the first starts active"
        " (failoverctl: needed by `status`, `emit` and `replay` only)",
        frozenset({COORDINATOR, PROBER, OPERATOR}),
        kind="regions",
        required=frozenset({COORDINATOR, ALL}),
    ),
    _text(
        "INSTANCE_ID",
        # A prober is an observer and quorum counts observers by name: its name must survive
        # restarts, or every restart adds a new observer.
        Derived(
            "`<hostname>` for a prober, `<hostname>-<pid>` otherwise",
            lambda v: (
                socket.gethostname()
                if v.get(ROLE_KEY) == PROBER
                else f"{socket.gethostname()}-{os.getpid()}"
            ),
        ),
        "this process's name (observer name of a prober, prefix of a coordinator's owner id)",
        _LONG_RUNNING,
        check=_no_space(128, "#"),
        rule="must have no spaces and no '#', at most 128 characters",
    ),
    _int("LEASE_TTL_MS", 10000, (100, MAX_DURATION_MS, "ms"), "lease TTL", _C),
    _int(
        "RENEW_INTERVAL_MS",
        Derived("TTL/5", lambda v: v["LEASE_TTL_MS"] // 5),
        (10, MAX_DURATION_MS, "ms"),
        "leader renews this often",
        _C,
    ),
    _int(
        "RENEW_DEADLINE_MS",
        Derived("2/3 TTL", lambda v: v["LEASE_TTL_MS"] * 2 // 3),
        (10, MAX_DURATION_MS, "ms"),
        "leader steps down after this long without a good renew",
        _C,
    ),
    _int("THRESHOLD", 3, (1, 1000, ""), "consecutive unhealthy observations per observer", _CO),
    _int("QUORUM", 1, (1, 1000, ""), "distinct observers that must agree", _CO),
    _int(
        "WINDOW_MS", 60000, (1, MAX_DURATION_MS, "ms"), "how recent those observations must be", _CO
    ),
    _int(
        "STALE_AFTER_MS",
        30000,
        (1, MAX_DURATION_MS, "ms"),
        "no health for this long counts as down",
        _CO,
    ),
    _int(
        "RECOVERY_THRESHOLD",
        3,
        (1, 1000, ""),
        "consecutive healthy observations to be up again",
        _CO,
    ),
    _int(
        "COOLDOWN_MS",
        60000,
        (0, MAX_DURATION_MS, "ms"),
        "no automatic decision within this of the previous one",
        _CO,
    ),
    # -- v2 policy (issue 10): seeds of the configuration in NS:state, observer bounds --
    _text(
        "PANIC_FRACTION",
        0.5,
        "while more than this share of the regions is down at once, no automatic decision"
        " (panic / fail-static, like Envoy's panic threshold); 1 = off",
        _CO,
        kind="fraction",
        rule="must be a decimal number from 0 to 1",
    ),
    _int(
        "PANIC_HOLD_MS",
        300000,
        (0, MAX_DURATION_MS, "ms"),
        "a panic holds automatic decisions at most this long from its start",
        _CO,
    ),
    _int(
        "MANUAL_MAX_AGE_MS",
        300000,
        (1, MAX_DURATION_MS, "ms"),
        "a `manual_failover` whose `at` is older than this when applied is refused as expired",
        _CO,
    ),
    _int(
        "MAX_OBSERVERS",
        1000,
        (1, 100000, "observers"),
        "distinct health sources tracked; a health event from a new source past this is a"
        " dead letter `too many observers`",
        _CO,
    ),
    _text(
        "OBSERVERS",
        (),
        "comma-separated allowlist of health sources; a health event from any other source is"
        " a dead letter `unknown observer: <source>` (empty: any source)",
        _CO,
        kind="names",
    ),
    _int(
        "OBSERVER_EXPIRY_MS",
        86_400_000,
        (1, 30 * MAX_DURATION_MS, "ms"),
        "an observer silent this long is forgotten from the state; must be >= `FAILOVER_WINDOW_MS`",
        _CO,
    ),
    _int(
        "MAX_DELIVERIES", 5, (1, 1000, ""), "deliveries before an entry becomes a dead letter", _C
    ),
    _int(
        "BATCH_SIZE",
        500,
        (1, 100000, ""),
        "entries per read (coordinator); most records per Redis write (bridge) / decisions per"
        " produce (mirror, capped at 1000)",
        frozenset({COORDINATOR, BRIDGE, MIRROR}),
    ),
    _int(
        "REELECT_DELAY_MS",
        5000,
        (MIN_REELECT_MS, MAX_DURATION_MS, "ms"),
        "wait before campaigning again after losing the lease, give or take the jitter",
        _C,
    ),
    _int(
        "REELECT_JITTER_MS",
        2000,
        (0, MAX_DURATION_MS, "ms"),
        f"random spread of that wait; delay - jitter must be >= {MIN_REELECT_MS}",
        _C,
    ),
    _int(
        "SHUTDOWN_TIMEOUT_MS",
        5000,
        (100, 600_000, "ms"),
        "SIGTERM to exit 0, at most",
        _LONG_RUNNING,
    ),
    _text(
        "LOG_LEVEL",
        "INFO",
        "log level, the same for every process (failoverctl: its own `-v`)",
        _LONG_RUNNING,
        kind="choice",
        choices=LOG_LEVELS,
    ),
    _text(
        "LOG_FORMAT",
        "text",
        "`text` (one line per record, UTC time) or `json` (one object per line)",
        _EVERY,
        kind="choice",
        choices=LOG_FORMATS,
    ),
    _int(
        "TICK_MS",
        1000,
        (10, 60_000, "ms"),
        "how often the leader feeds the time to the policy",
        _CO,
    ),
    _int(
        "MAX_CLOCK_SKEW_MS",
        # A producer clock running ahead moves the policy clock ahead; the guard must stay
        # well inside stale_after or it could make healthy regions look stale.
        Derived("5000, at most stale/2", lambda v: min(5000, v["STALE_AFTER_MS"] // 2)),
        (0, MAX_DURATION_MS, "ms"),
        "an event whose time is further than this ahead of its arrival in Redis (the earlier"
        " of its entry id and the server's `TIME` when the leader read it) is a dead letter;"
        " must be < `FAILOVER_STALE_AFTER_MS`; 0 = off",
        _CO,
    ),
    _int(
        "METRICS_PORT",
        0,
        (0, 65535, ""),
        "Prometheus port of the process (0 = off); give each process on a host its own"
        " (the example Procfile uses honcho's `$PORT`)",
        _LONG_RUNNING,
    ),
    _text(
        "METRICS_ADDR",
        "0.0.0.0",  # noqa: S104 - Prometheus scrapes from another host by default
        "address the metrics endpoint binds, an IPv4 or IPv6 address (`127.0.0.1` keeps it on"
        " the host)",
        _LONG_RUNNING,
        check=_ip_address,
        rule="must be an IP address such as 0.0.0.0, 127.0.0.1 or ::",
    ),
    _int(
        "DECISIONS_MAXLEN",
        0,
        (0, 100_000_000, "entries"),
        "approximate cap of the decisions stream (0 = unbounded)",
        _C,
    ),
    _int(
        "DLQ_MAXLEN",
        # Bad input alone must not fill Redis: each dead letter is under 128 KiB, so the
        # default bounds the stream at a few GiB in the very worst case.
        100_000,
        (0, 100_000_000, "entries"),
        "approximate cap of the dead-letter stream (0 = unbounded)",
        _C,
    ),
    # -- issue 9: hostile input and Redis limits --
    _text(
        "REDIS_TLS_CA",
        "",
        "PEM file of the CA that signed the Redis server's certificate (`rediss://` only;"
        " verification is always on); same as the URL parameter `ssl_ca_certs`",
        _EVERY,
    ),
    _text(
        "REDIS_TLS_CERT",
        "",
        "PEM client certificate for Redis's `tls-auth-clients` (with `FAILOVER_REDIS_TLS_KEY`)",
        _EVERY,
    ),
    _text(
        "REDIS_TLS_KEY",
        "",
        "PEM private key of `FAILOVER_REDIS_TLS_CERT`",
        _EVERY,
    ),
    _text(
        "ALLOW_EVICTION",
        False,
        "lead even when Redis's `maxmemory-policy` is `allkeys-*` (Redis may then evict the"
        " state, the epoch or undelivered entries: a new leader could undo decisions)",
        _CO,
        kind="bool",
    ),
    _int(
        "MAX_ENTRY_BYTES",
        65_536,
        (1024, 8 * 1024 * 1024, "bytes"),
        "an input entry larger than this (fields and values together) is a dead letter"
        " `entry too large`; it never reaches the leader whole (its dead letter holds the"
        " first 1024 bytes of each value, the size and the SHA-256)",
        _CO,
    ),
    _int(
        "INPUT_RETENTION_MS",
        86_400_000,
        (0, 90 * MAX_DURATION_MS, "ms"),
        "the leader trims `NS:health` / `NS:events` of entries older than this that every"
        " consumer group has acknowledged (never an undelivered or pending one);"
        " 0 = keep everything",
        _C,
    ),
    # -- replicated Redis (DESIGN §4 v2) --
    _text(
        "REDIS_SENTINELS",
        "",
        "comma-separated Sentinel `host:port` list: find the primary through Sentinel and"
        " follow promotions (user, password, db and TLS still from `FAILOVER_REDIS_URL`,"
        " whose host is then unused); empty = the URL's host",
        _EVERY,
        check=_sentinel_list,
        rule="must be a comma-separated list of host:port",
    ),
    _text(
        "REDIS_SENTINEL_MASTER",
        "mymaster",
        "the primary's name in the Sentinels' `sentinel monitor`",
        _EVERY,
        check=_no_space(128),
        rule="must be non-empty, without spaces, at most 128 characters",
    ),
    _text("REDIS_SENTINEL_USERNAME", "", "ACL user for the Sentinels (if they need one)", _EVERY),
    _text(
        "REDIS_SENTINEL_PASSWORD",
        "",
        "password for the Sentinels (`requirepass` / ACL; never appears in logs)",
        _EVERY,
        kind="secret",
    ),
    _int(
        "MIN_REPLICAS",
        0,
        (0, 100, "replicas"),
        "a new lease counts only once `WAIT` confirms it on this many replicas (else it is"
        " released and the attempt lost); 0 = off",
        _C,
    ),
    _int(
        "HEARTBEAT_INTERVAL_MS",
        # The renew interval (TTL/5 where that is itself a default not yet computed).
        Derived("the renew interval", lambda v: v.get("RENEW_INTERVAL_MS", v["LEASE_TTL_MS"] // 5)),
        (10, HOUR_MS, "ms"),
        "every process writes `NS:members:<owner>` this often (TTL: 3 intervals)",
        _LONG_RUNNING,
    ),
    _text(
        "PROBE_TARGETS",
        (),
        "`region=http(s)://host[:port]/path` or `region=tcp://host:port`, comma-separated;"
        " several per region allowed; regions must be in `FAILOVER_REGIONS` when that is set",
        frozenset({PROBER, OPERATOR}),
        kind="targets",
        required=frozenset({PROBER}),
    ),
    _int("PROBE_INTERVAL_MS", 5000, (100, HOUR_MS, "ms"), "one probe round this often", {PROBER}),
    _int(
        "PROBE_TIMEOUT_MS",
        2000,
        (10, 600_000, "ms"),
        "per-probe timeout (connect + answer); an answer slower than 80 % of it is `degraded`",
        frozenset({PROBER, OPERATOR}),
    ),
    _int(
        "PROBE_EXPECT_STATUS",
        200,
        (100, 599, ""),
        "HTTP status that means healthy",
        frozenset({PROBER, OPERATOR}),
    ),
    _int(
        "LAG_INTERVAL_MS",
        1000,
        (10, HOUR_MS, "ms"),
        "lag monitor: one sample this often",
        frozenset({LAGMON, OPERATOR}),
    ),
    _int(
        "LAG_WINDOW",
        10,
        (2, 10000, "samples"),
        "lag monitor: samples in the lag-status window",
        frozenset({LAGMON, OPERATOR}),
    ),
    _text(
        "KAFKA_BOOTSTRAP",
        "",
        "comma-separated `host:port` list of the Kafka brokers",
        _KAFKA,
        required=_KAFKA,
    ),
    _text("KAFKA_HEALTH_TOPIC", "failover.health", "topic bridged into `NS:health`", {BRIDGE}),
    _text("KAFKA_EVENTS_TOPIC", "failover.events", "topic bridged into `NS:events`", {BRIDGE}),
    _text("KAFKA_DECISIONS_TOPIC", "failover.decisions", "topic the mirror produces to", {MIRROR}),
    _text(
        "KAFKA_GROUP",
        "failover-bridge",
        "the bridge's Kafka consumer group (also its app id)",
        {BRIDGE},
    ),
    _text(
        "KAFKA_IDEMPOTENT",
        True,
        "idempotent decisions producer; `false` for brokers without it",
        {MIRROR},
        kind="bool",
    ),
    _text(
        "KAFKA_AUTO_CREATE_TOPICS",
        False,
        "create missing topics at startup (1 partition, RF 1: for development)",
        _KAFKA,
        kind="bool",
    ),
    _int(
        "KAFKA_SESSION_TIMEOUT_MS",
        10000,
        (1000, 1_800_000, "ms"),
        "bridge group session timeout; also how long a dead mirror's pending decisions wait"
        " before another mirror claims them",
        _KAFKA,
    ),
    _text(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "how clients talk to the brokers",
        _KAFKA,
        kind="choice",
        choices=_PROTOCOLS,
    ),
    _text(
        "KAFKA_SASL_MECHANISM",
        "",
        "SASL mechanism (empty: `PLAIN` when SASL)",
        _KAFKA,
        kind="choice",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    ),
    _text("KAFKA_SASL_USERNAME", "", "SASL user", _KAFKA),
    _text(
        "KAFKA_SASL_PASSWORD", "", "SASL password (never appears in logs)", _KAFKA, kind="secret"
    ),
    _text(
        "KAFKA_SSL_CAFILE", "", "CA bundle for `SSL` / `SASL_SSL` (system CAs when empty)", _KAFKA
    ),
    *EXECUTOR_ROWS,
)

BY_ENV: dict[str, Setting] = {s.env: s for s in TABLE}


def static_defaults() -> dict[str, Any]:
    """Every variable's default value (derived ones computed from the others' defaults)."""
    plain = {s.env: s.default for s in TABLE if not isinstance(s.default, Derived)}
    derived = {s.env: s.default.compute(plain) for s in TABLE if isinstance(s.default, Derived)}
    return plain | derived
