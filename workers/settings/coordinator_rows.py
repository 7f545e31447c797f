"""The rows of the coordinator and its policy, and those every process reads (identity, logs,
metrics, shutdown, heartbeats), which sit among them in the README's order.

Three blocks, each placed in the table by :mod:`workers.settings.table`.
"""

from __future__ import annotations

import os
import socket

from schemas.codec import MAX_DATA_BYTES
from workers.settings.setting import (
    ALL,
    BRIDGE,
    COORD,
    COORD_OPS,
    COORDINATOR,
    EVERY,
    HOUR_MS,
    LONG_RUNNING,
    MAX_DURATION_MS,
    MIN_REELECT_MS,
    MIRROR,
    OPERATOR,
    PROBER,
    ROLE_KEY,
    Derived,
    int_row,
    is_ip_address,
    no_space,
    text_row,
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

CORE_ROWS = (
    text_row(
        "REGIONS",
        (),
        "comma-separated regions in priority order; the first starts active"
        " (failoverctl: needed by `status`, `emit` and `replay` only)",
        frozenset({COORDINATOR, PROBER, OPERATOR}),
        kind="regions",
        required=frozenset({COORDINATOR, ALL}),
    ),
    text_row(
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
        LONG_RUNNING,
        check=no_space(128, "#"),
        rule="must have no spaces and no '#', at most 128 characters",
    ),
    int_row("LEASE_TTL_MS", 10000, (100, MAX_DURATION_MS, "ms"), "lease TTL", COORD),
    int_row(
        "RENEW_INTERVAL_MS",
        Derived("TTL/5", lambda v: v["LEASE_TTL_MS"] // 5),
        (10, MAX_DURATION_MS, "ms"),
        "leader renews this often",
        COORD,
    ),
    int_row(
        "RENEW_DEADLINE_MS",
        Derived("2/3 TTL", lambda v: v["LEASE_TTL_MS"] * 2 // 3),
        (10, MAX_DURATION_MS, "ms"),
        "leader steps down after this long without a good renew",
        COORD,
    ),
    int_row(
        "THRESHOLD", 3, (1, 1000, ""), "consecutive unhealthy observations per observer", COORD_OPS
    ),
    int_row("QUORUM", 1, (1, 1000, ""), "distinct observers that must agree", COORD_OPS),
    int_row(
        "WINDOW_MS",
        60000,
        (1, MAX_DURATION_MS, "ms"),
        "how recent those observations must be",
        COORD_OPS,
    ),
    int_row(
        "STALE_AFTER_MS",
        30000,
        (1, MAX_DURATION_MS, "ms"),
        "no health for this long counts as down",
        COORD_OPS,
    ),
    int_row(
        "RECOVERY_THRESHOLD",
        3,
        (1, 1000, ""),
        "consecutive healthy observations to be up again",
        COORD_OPS,
    ),
    int_row(
        "COOLDOWN_MS",
        60000,
        (0, MAX_DURATION_MS, "ms"),
        "no automatic decision within this of the previous one",
        COORD_OPS,
    ),
    # -- v2 policy (issue 10): seeds of the configuration in NS:state, observer bounds --
    text_row(
        "PANIC_FRACTION",
        0.5,
        "while more than this share of the regions is down at once, no automatic decision"
        " (panic / fail-static, like Envoy's panic threshold); 1 = off",
        COORD_OPS,
        kind="fraction",
        rule="must be a decimal number from 0 to 1",
    ),
    int_row(
        "PANIC_HOLD_MS",
        300000,
        (0, MAX_DURATION_MS, "ms"),
        "a panic holds automatic decisions at most this long from its start",
        COORD_OPS,
    ),
    int_row(
        "MANUAL_MAX_AGE_MS",
        300000,
        (1, MAX_DURATION_MS, "ms"),
        "a `manual_failover` whose `at` is older than this when applied is refused as expired",
        COORD_OPS,
    ),
    int_row(
        "MAX_OBSERVERS",
        1000,
        (1, 100000, "observers"),
        "distinct health sources tracked; a health event from a new source past this is a"
        " dead letter `too many observers`",
        COORD_OPS,
    ),
    text_row(
        "OBSERVERS",
        (),
        "comma-separated allowlist of health sources; a health event from any other source is"
        " a dead letter `unknown observer: <source>` (empty: any source)",
        COORD_OPS,
        kind="names",
    ),
    int_row(
        "OBSERVER_EXPIRY_MS",
        86_400_000,
        (1, 30 * MAX_DURATION_MS, "ms"),
        "an observer silent this long is forgotten from the state; must be >= `FAILOVER_WINDOW_MS`",
        COORD_OPS,
    ),
    int_row(
        "MAX_DELIVERIES",
        5,
        (1, 1000, ""),
        "deliveries before an entry becomes a dead letter",
        COORD,
    ),
    int_row(
        "BATCH_SIZE",
        500,
        (1, 100000, ""),
        "entries per read (coordinator); most records per Redis write (bridge) / decisions per"
        " produce (mirror, capped at 1000)",
        frozenset({COORDINATOR, BRIDGE, MIRROR}),
    ),
    int_row(
        "REELECT_DELAY_MS",
        5000,
        (MIN_REELECT_MS, MAX_DURATION_MS, "ms"),
        "wait before campaigning again after losing the lease, give or take the jitter",
        COORD,
    ),
    int_row(
        "REELECT_JITTER_MS",
        2000,
        (0, MAX_DURATION_MS, "ms"),
        f"random spread of that wait; delay - jitter must be >= {MIN_REELECT_MS}",
        COORD,
    ),
    int_row(
        "SHUTDOWN_TIMEOUT_MS",
        5000,
        (100, 600_000, "ms"),
        "SIGTERM to exit 0, at most",
        LONG_RUNNING,
    ),
    text_row(
        "LOG_LEVEL",
        "INFO",
        "log level, the same for every process (failoverctl: its own `-v`)",
        LONG_RUNNING,
        kind="choice",
        choices=LOG_LEVELS,
    ),
    text_row(
        "LOG_FORMAT",
        "text",
        "`text` (one line per record, UTC time) or `json` (one object per line)",
        EVERY,
        kind="choice",
        choices=LOG_FORMATS,
    ),
    int_row(
        "TICK_MS",
        1000,
        (10, 60_000, "ms"),
        "how often the leader feeds the time to the policy",
        COORD_OPS,
    ),
    int_row(
        "MAX_CLOCK_SKEW_MS",
        # A producer clock running ahead moves the policy clock ahead; the guard must stay
        # well inside stale_after or it could make healthy regions look stale.
        Derived("5000, at most stale/2", lambda v: min(5000, v["STALE_AFTER_MS"] // 2)),
        (0, MAX_DURATION_MS, "ms"),
        "an event whose time is further than this ahead of its arrival in Redis (the earlier"
        " of its entry id and the server's `TIME` when the leader read it) is a dead letter;"
        " must be < `FAILOVER_STALE_AFTER_MS`; 0 = off",
        COORD_OPS,
    ),
    int_row(
        "METRICS_PORT",
        0,
        (0, 65535, ""),
        "Prometheus port of the process (0 = off); give each process on a host its own"
        " (the example Procfile uses honcho's `$PORT`)",
        LONG_RUNNING,
    ),
    text_row(
        "METRICS_ADDR",
        "0.0.0.0",  # noqa: S104 - Prometheus scrapes from another host by default
        "address the metrics endpoint binds, an IPv4 or IPv6 address (`127.0.0.1` keeps it on"
        " the host)",
        LONG_RUNNING,
        check=is_ip_address,
        rule="must be an IP address such as 0.0.0.0, 127.0.0.1 or ::",
    ),
    int_row(
        "DECISIONS_MAXLEN",
        0,
        (0, 100_000_000, "entries"),
        "approximate cap of the decisions stream (0 = unbounded)",
        COORD,
    ),
    int_row(
        "DLQ_MAXLEN",
        # Bad input alone must not fill Redis: each dead letter is under 128 KiB, so the
        # default bounds the stream at a few GiB in the very worst case.
        100_000,
        (0, 100_000_000, "entries"),
        "approximate cap of the dead-letter stream (0 = unbounded)",
        COORD,
    ),
)

# Issue 9: hostile input and Redis limits.
INPUT_LIMIT_ROWS = (
    text_row(
        "ALLOW_EVICTION",
        False,
        "lead even when Redis's `maxmemory-policy` is `allkeys-*` (Redis may then evict the"
        " state, the epoch or undelivered entries: a new leader could undo decisions)",
        COORD_OPS,
        kind="bool",
    ),
    int_row(
        "MAX_ENTRY_BYTES",
        MAX_DATA_BYTES,  # the codec's own limit on one `data` value
        (1024, 8 * 1024 * 1024, "bytes"),
        "an input entry larger than this (fields and values together) is a dead letter"
        " `entry too large`; it never reaches the leader whole (its dead letter holds the"
        " first 1024 bytes of each value, the size and the SHA-256)",
        COORD_OPS,
    ),
    int_row(
        "INPUT_RETENTION_MS",
        86_400_000,
        (0, 90 * MAX_DURATION_MS, "ms"),
        "the leader trims `NS:health` / `NS:events` of entries older than this that every"
        " consumer group has acknowledged (never an undelivered or pending one);"
        " 0 = keep everything",
        COORD,
    ),
)

REPLICATION_ROWS = (
    int_row(
        "MIN_REPLICAS",
        0,
        (0, 100, "replicas"),
        "a new lease, and a decision on `NS:decisions`, count only once `WAIT` confirms them"
        " on this many replicas (an unconfirmed lease is released and the attempt lost;"
        " decisions stay held in `NS:decisions:held` until confirmed); 0 = off",
        COORD,
    ),
    int_row(
        "HEARTBEAT_INTERVAL_MS",
        # The renew interval (TTL/5 where that is itself a default not yet computed).
        Derived("the renew interval", lambda v: v.get("RENEW_INTERVAL_MS", v["LEASE_TTL_MS"] // 5)),
        (10, HOUR_MS, "ms"),
        "every process writes `NS:members:<owner>` this often (TTL: 3 intervals)",
        LONG_RUNNING,
    ),
)
