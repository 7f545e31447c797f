"""The rows of the edge processes: prober, lag monitor, Kafka bridge and mirror, executor."""

from __future__ import annotations

from workers.settings.setting import (
    BRIDGE,
    EXECUTOR,
    HOUR_MS,
    KAFKA_ROLES,
    LAGMON,
    MAX_DURATION_MS,
    MIRROR,
    OPERATOR,
    PROBER,
    int_row,
    no_space,
    text_row,
)

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_X = frozenset({EXECUTOR})

PROBE_ROWS = (
    text_row(
        "PROBE_TARGETS",
        (),
        "`region=http(s)://host[:port]/path` or `region=tcp://host:port`, comma-separated;"
        " several per region allowed; regions must be in `FAILOVER_REGIONS` when that is set",
        frozenset({PROBER, OPERATOR}),
        kind="targets",
        required=frozenset({PROBER}),
    ),
    int_row(
        "PROBE_INTERVAL_MS", 5000, (100, HOUR_MS, "ms"), "one probe round this often", {PROBER}
    ),
    int_row(
        "PROBE_TIMEOUT_MS",
        2000,
        (10, 600_000, "ms"),
        "per-probe timeout (connect + answer); an answer slower than 80 % of it is `degraded`",
        frozenset({PROBER, OPERATOR}),
    ),
    int_row(
        "PROBE_EXPECT_STATUS",
        200,
        (100, 599, ""),
        "HTTP status that means healthy",
        frozenset({PROBER, OPERATOR}),
    ),
)

LAG_ROWS = (
    int_row(
        "LAG_INTERVAL_MS",
        1000,
        (10, HOUR_MS, "ms"),
        "lag monitor: one sample this often",
        frozenset({LAGMON, OPERATOR}),
    ),
    int_row(
        "LAG_WINDOW",
        10,
        (2, 10000, "samples"),
        "lag monitor: samples in the lag-status window",
        frozenset({LAGMON, OPERATOR}),
    ),
)

KAFKA_ROWS = (
    text_row(
        "KAFKA_BOOTSTRAP",
        "",
        "comma-separated `host:port` list of the Kafka brokers",
        KAFKA_ROLES,
        required=KAFKA_ROLES,
    ),
    text_row("KAFKA_HEALTH_TOPIC", "failover.health", "topic bridged into `NS:health`", {BRIDGE}),
    text_row("KAFKA_EVENTS_TOPIC", "failover.events", "topic bridged into `NS:events`", {BRIDGE}),
    text_row(
        "KAFKA_DECISIONS_TOPIC", "failover.decisions", "topic the mirror produces to", {MIRROR}
    ),
    text_row(
        "KAFKA_GROUP",
        "failover-bridge",
        "the bridge's Kafka consumer group (also its app id)",
        {BRIDGE},
    ),
    text_row(
        "KAFKA_IDEMPOTENT",
        True,
        "idempotent decisions producer; `false` for brokers without it",
        {MIRROR},
        kind="bool",
    ),
    text_row(
        "KAFKA_AUTO_CREATE_TOPICS",
        False,
        "create missing topics at startup (1 partition, RF 1: for development)",
        KAFKA_ROLES,
        kind="bool",
    ),
    int_row(
        "KAFKA_SESSION_TIMEOUT_MS",
        10000,
        (1000, 1_800_000, "ms"),
        "bridge group session timeout; also how long a dead mirror's pending decisions wait"
        " before another mirror claims them",
        KAFKA_ROLES,
    ),
    text_row(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "how clients talk to the brokers",
        KAFKA_ROLES,
        kind="choice",
        choices=_PROTOCOLS,
    ),
    text_row(
        "KAFKA_SASL_MECHANISM",
        "",
        "SASL mechanism (empty: `PLAIN` when SASL)",
        KAFKA_ROLES,
        kind="choice",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    ),
    text_row("KAFKA_SASL_USERNAME", "", "SASL user", KAFKA_ROLES),
    text_row(
        "KAFKA_SASL_PASSWORD",
        "",
        "SASL password (never appears in logs)",
        KAFKA_ROLES,
        kind="secret",
    ),
    text_row(
        "KAFKA_SSL_CAFILE",
        "",
        "CA bundle for `SSL` / `SASL_SSL` (system CAs when empty)",
        KAFKA_ROLES,
    ),
)

# The executor's rows (DESIGN §8b): its group and its one action, with bounds on each try.
EXECUTOR_ROWS = (
    text_row(
        "EXECUTOR_GROUP",
        "executor",
        "the executor's consumer group on `NS:decisions`: one per kind of executor; processes"
        " of one kind share it and each decision is carried out once per group",
        _X,
        check=no_space(64, ":"),
        rule="must be non-empty, without spaces or ':', at most 64 characters",
    ),
    text_row(
        "EXECUTOR_WEBHOOK_URL",
        "",
        "`http(s)://` URL the executor POSTs each failover decision to, signed (set this or"
        " `FAILOVER_EXECUTOR_COMMAND`)",
        _X,
        check=lambda v: v.startswith(("http://", "https://")) and no_space(2048)(v),
        rule="must be an http:// or https:// URL without spaces",
    ),
    text_row(
        "EXECUTOR_WEBHOOK_SECRET",
        "",
        "HMAC-SHA256 key of the webhook signature; required with a webhook (never logged)",
        _X,
        kind="secret",
    ),
    text_row(
        "EXECUTOR_COMMAND",
        "",
        "command run once per failover decision: the decision JSON on stdin,"
        " `FAILOVER_DECISION_ID` / `_EPOCH` / `_FROM_REGION` / `_TO_REGION` in its"
        " environment; exit 0 = done, 2 = failed for good, else retried",
        _X,
    ),
    int_row(
        "EXECUTOR_TIMEOUT_MS",
        10000,
        (10, 600_000, "ms"),
        "one attempt of the action, at most (then it counts as failed, and is retried)",
        _X,
    ),
    int_row(
        "EXECUTOR_ATTEMPTS",
        5,
        (1, 100, ""),
        "attempts per decision on failures that may pass (refused connection, 5xx, timeout,"
        " exit code other than 0 and 2); 4xx and exit 2 are not retried",
        _X,
    ),
    int_row(
        "EXECUTOR_BACKOFF_MS",
        500,
        (0, 60_000, "ms"),
        "wait before the first retry, doubled each time up to 16 times this",
        _X,
    ),
    int_row(
        "EXECUTOR_CLAIM_IDLE_MS",
        10000,
        (100, MAX_DURATION_MS, "ms"),
        "a stopped executor's undone decisions are taken over by another of its group after"
        " this; one it had started is sent again only once all its attempts could be over",
        _X,
    ),
)
