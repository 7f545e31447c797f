"""One frozen settings object, built once from ``FAILOVER_*`` variables (DESIGN §7).

Every bad value is reported at startup, one line per variable naming the rule it breaks;
passwords never appear in the text (URLs are redacted).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec

from schemas.errors import ConfigError
from streams.connection import redact, validate_url

PREFIX = "FAILOVER_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
MIN_REELECT_MS = 1000
# Upper bound for lease and re-election durations: a day is already absurd, and a larger
# value would only fail later, inside Redis (PEXPIRE) or the event loop, far from its cause.
MAX_DURATION_MS = 86_400_000
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

T = TypeVar("T")


class ProbeTarget(msgspec.Struct, frozen=True):
    """One endpoint the health prober checks for one region."""

    region: str
    url: str


class KafkaSettings(msgspec.Struct, frozen=True):
    """The Kafka edge (bridge and decision mirror); unused unless ``bootstrap`` is set."""

    bootstrap: str = ""
    health_topic: str = "failover.health"
    events_topic: str = "failover.events"
    decisions_topic: str = "failover.decisions"
    group: str = "failover-bridge"
    idempotent: bool = True
    auto_create_topics: bool = False
    session_timeout_ms: int = 10000
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""

    def __repr__(self) -> str:
        """Like the default repr, with the SASL password masked (settings get logged)."""
        return _masked_repr(self, {"sasl_password": "***" if self.sasl_password else ""})


class Settings(msgspec.Struct, frozen=True):
    """Everything a process is configured with; see DESIGN §7 for each variable."""

    regions: tuple[str, ...]
    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = "failover"
    instance_id: str = ""
    lease_ttl_ms: int = 10000
    renew_interval_ms: int = 2000
    renew_deadline_ms: int = 6666
    threshold: int = 3
    quorum: int = 1
    window_ms: int = 60000
    stale_after_ms: int = 30000
    recovery_threshold: int = 3
    cooldown_ms: int = 60000
    max_deliveries: int = 5
    batch_size: int = 500
    reelect_delay_ms: int = 5000
    reelect_jitter_ms: int = 2000
    shutdown_timeout_ms: int = 5000
    tick_ms: int = 1000
    max_clock_skew_ms: int = 5000
    metrics_port: int = 0
    decisions_maxlen: int = 0
    dlq_maxlen: int = 0
    input_retention_ms: int = 86_400_000
    probe_targets: tuple[ProbeTarget, ...] = ()
    probe_interval_ms: int = 5000
    probe_timeout_ms: int = 2000
    probe_expect_status: int = 200
    lag_interval_ms: int = 1000
    lag_window: int = 10
    kafka: KafkaSettings = KafkaSettings()

    @property
    def redacted_url(self) -> str:
        """The Redis URL with any password masked, for logs."""
        return redact(self.redis_url)

    def __repr__(self) -> str:
        """Like the default repr, with passwords masked (settings get logged)."""
        return _masked_repr(
            self,
            {
                "redis_url": self.redacted_url,
                "probe_targets": tuple(
                    ProbeTarget(region=t.region, url=redact(t.url)) for t in self.probe_targets
                ),
            },
        )


def _masked_repr(obj: msgspec.Struct, masked: Mapping[str, object]) -> str:
    fields = ", ".join(
        f"{name}={masked.get(name, getattr(obj, name))!r}" for name in obj.__struct_fields__
    )
    return f"{type(obj).__name__}({fields})"


class _Reader:
    """Reads variables one by one and collects one error line per bad value."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def fail(self, name: str, rule: str, value: str | None = None) -> None:
        shown = "" if value is None else f", got {value!r}"
        self.errors.append(f"{PREFIX}{name}: {rule}{shown}")

    def text(
        self, name: str, default: str, check: Callable[[str], bool] | None = None, rule: str = ""
    ) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if check is not None and not check(value):
            self.fail(name, rule, value)
            return default
        return value

    def integer(
        self,
        name: str,
        default: int,
        *,
        minimum: int = 0,
        maximum: int | None = None,
        unit: str = "",
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        what = f"a whole number{unit}"
        if not re.fullmatch(r"[+-]?\d+", value):
            self.fail(name, f"must be {what}", value)
            return default
        number = int(value)
        if number < minimum:
            self.fail(name, f"must be {what} >= {minimum}", value)
            return default
        if maximum is not None and number > maximum:
            self.fail(name, f"must be {what} <= {maximum}", value)
            return default
        return number

    def optional_integer(
        self, name: str, *, minimum: int, maximum: int | None = None, unit: str = ""
    ) -> int | None:
        if self.raw(name) is None:
            return None
        return self.integer(name, minimum, minimum=minimum, maximum=maximum, unit=unit)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        self.fail(name, "must be true or false", value)
        return default


def _regions(reader: _Reader) -> tuple[str, ...]:
    value = reader.raw("REGIONS")
    if value is None:
        reader.fail("REGIONS", "is required: comma-separated regions in priority order")
        return ()
    regions = tuple(part.strip() for part in value.split(","))
    bad = [r for r in regions if not _NAME.match(r)]
    if bad:
        reader.fail(
            "REGIONS",
            "each region must be 1-64 letters, digits, '.', '_' or '-' (no empty entries)",
            value,
        )
        return ()
    dupes = sorted({r for r in regions if regions.count(r) > 1})
    if dupes:
        reader.fail("REGIONS", f"regions must be distinct, {', '.join(dupes)} repeated", value)
        return ()
    return regions


def _probe_targets(reader: _Reader, regions: tuple[str, ...]) -> tuple[ProbeTarget, ...]:
    value = reader.raw("PROBE_TARGETS")
    if value is None:
        return ()
    targets = []
    for part in (p.strip() for p in value.split(",")):
        region, sep, url = part.partition("=")
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if not sep or not region or scheme not in ("http", "https", "tcp"):
            rule = "entries must be region=http(s)://... or region=tcp://host:port"
            reader.fail("PROBE_TARGETS", rule, redact(part))
            return ()
        if regions and region not in regions:
            shown = f"{region}={redact(url)}"
            reader.fail("PROBE_TARGETS", f"region {region!r} is not in FAILOVER_REGIONS", shown)
            return ()
        targets.append(ProbeTarget(region=region, url=url))
    return tuple(targets)


def _kafka(reader: _Reader) -> KafkaSettings:
    d = KafkaSettings()
    protocols = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    mechanisms = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    return KafkaSettings(
        bootstrap=reader.text("KAFKA_BOOTSTRAP", d.bootstrap),
        health_topic=reader.text("KAFKA_HEALTH_TOPIC", d.health_topic),
        events_topic=reader.text("KAFKA_EVENTS_TOPIC", d.events_topic),
        decisions_topic=reader.text("KAFKA_DECISIONS_TOPIC", d.decisions_topic),
        group=reader.text("KAFKA_GROUP", d.group),
        idempotent=reader.boolean("KAFKA_IDEMPOTENT", d.idempotent),
        auto_create_topics=reader.boolean("KAFKA_AUTO_CREATE_TOPICS", d.auto_create_topics),
        session_timeout_ms=reader.integer(
            "KAFKA_SESSION_TIMEOUT_MS", d.session_timeout_ms, minimum=1000, unit=" of ms"
        ),
        security_protocol=reader.text(
            "KAFKA_SECURITY_PROTOCOL",
            d.security_protocol,
            lambda v: v in protocols,
            f"must be one of {', '.join(protocols)}",
        ),
        sasl_mechanism=reader.text(
            "KAFKA_SASL_MECHANISM",
            d.sasl_mechanism,
            lambda v: v in mechanisms,
            "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
        sasl_username=reader.text("KAFKA_SASL_USERNAME", d.sasl_username),
        sasl_password=reader.env.get(PREFIX + "KAFKA_SASL_PASSWORD", ""),
        ssl_cafile=reader.text("KAFKA_SSL_CAFILE", d.ssl_cafile),
    )


def _check(reader: _Reader, fn: Callable[[str], None], name: str, value: str) -> None:
    try:
        fn(value)
    except ConfigError as exc:
        reader.fail(name, str(exc))


def help_text(role: str) -> str:
    """The ``--help`` text of a process role: the ``FAILOVER_*`` variables it reads."""
    names = [PREFIX + name.upper() for name in Settings.__struct_fields__ if name != "kafka"]
    names += [f"{PREFIX}KAFKA_{name.upper()}" for name in KafkaSettings.__struct_fields__]
    lines = [
        f"usage: python -m workers.{role} (no arguments; settings from the environment)",
        "",
        "environment variables (see the README's configuration table):",
    ]
    lines += [f"  {name}" for name in sorted(names)]
    return "\n".join(lines)


def load_settings(env: Mapping[str, str] | None = None, *, role: str = "coordinator") -> Settings:
    """Build and validate :class:`Settings` from ``env`` (default: the process environment).

    Raises :class:`ConfigError` whose message has one line per bad variable. ``role`` names
    the process (every role reads every setting, for now).
    """
    del role
    reader = _Reader(os.environ if env is None else env)
    ms = " of milliseconds"
    regions = _regions(reader)
    url = reader.text("REDIS_URL", DEFAULT_REDIS_URL)
    _check(reader, validate_url, "REDIS_URL", url)
    namespace = reader.text(
        "NAMESPACE",
        "failover",
        lambda v: not any(c.isspace() for c in v) and len(v) <= 128,
        "must be non-empty, without spaces, at most 128 characters",
    )
    instance = reader.text(
        "INSTANCE_ID",
        f"{socket.gethostname()}-{os.getpid()}",
        lambda v: not any(c.isspace() for c in v) and "#" not in v and len(v) <= 128,
        "must have no spaces and no '#', at most 128 characters",
    )
    before = len(reader.errors)
    ttl = reader.integer("LEASE_TTL_MS", 10000, minimum=100, maximum=MAX_DURATION_MS, unit=ms)
    interval = reader.optional_integer(
        "RENEW_INTERVAL_MS", minimum=10, maximum=MAX_DURATION_MS, unit=ms
    )
    deadline = reader.optional_integer(
        "RENEW_DEADLINE_MS", minimum=10, maximum=MAX_DURATION_MS, unit=ms
    )
    interval = ttl // 5 if interval is None else interval
    deadline = ttl * 2 // 3 if deadline is None else deadline
    if len(reader.errors) == before:  # compare only values that parsed
        if interval >= deadline:
            reader.fail(
                "RENEW_INTERVAL_MS",
                f"must be < FAILOVER_RENEW_DEADLINE_MS ({deadline})",
                str(interval),
            )
        if deadline >= ttl:
            reader.fail(
                "RENEW_DEADLINE_MS", f"must be < FAILOVER_LEASE_TTL_MS ({ttl})", str(deadline)
            )
    before = len(reader.errors)
    delay = reader.integer(
        "REELECT_DELAY_MS", 5000, minimum=MIN_REELECT_MS, maximum=MAX_DURATION_MS, unit=ms
    )
    jitter = reader.integer("REELECT_JITTER_MS", 2000, minimum=0, maximum=MAX_DURATION_MS, unit=ms)
    if len(reader.errors) == before and delay - jitter < MIN_REELECT_MS:
        reader.fail(
            "REELECT_JITTER_MS",
            f"FAILOVER_REELECT_DELAY_MS - FAILOVER_REELECT_JITTER_MS must be >= {MIN_REELECT_MS}"
            f" (delay {delay})",
            str(jitter),
        )
    stale_after = reader.integer("STALE_AFTER_MS", 30000, minimum=1, unit=ms)
    skew = reader.optional_integer("MAX_CLOCK_SKEW_MS", minimum=0, maximum=MAX_DURATION_MS, unit=ms)
    if skew is None:
        # A producer clock running ahead moves the policy clock ahead; it must stay well
        # inside stale_after or it could make healthy regions look stale.
        skew = min(5000, stale_after // 2)
    elif skew >= stale_after:
        reader.fail(
            "MAX_CLOCK_SKEW_MS",
            f"must be < FAILOVER_STALE_AFTER_MS ({stale_after}) or 0 to turn the check off",
            str(skew),
        )
    settings = Settings(
        regions=regions,
        redis_url=url,
        namespace=namespace,
        instance_id=instance,
        lease_ttl_ms=ttl,
        renew_interval_ms=interval,
        renew_deadline_ms=deadline,
        threshold=reader.integer("THRESHOLD", 3, minimum=1),
        quorum=reader.integer("QUORUM", 1, minimum=1),
        window_ms=reader.integer("WINDOW_MS", 60000, minimum=1, unit=ms),
        stale_after_ms=stale_after,
        recovery_threshold=reader.integer("RECOVERY_THRESHOLD", 3, minimum=1),
        cooldown_ms=reader.integer("COOLDOWN_MS", 60000, minimum=0, unit=ms),
        max_deliveries=reader.integer("MAX_DELIVERIES", 5, minimum=1),
        batch_size=reader.integer("BATCH_SIZE", 500, minimum=1, maximum=100000),
        reelect_delay_ms=delay,
        reelect_jitter_ms=jitter,
        shutdown_timeout_ms=reader.integer("SHUTDOWN_TIMEOUT_MS", 5000, minimum=100, unit=ms),
        tick_ms=reader.integer("TICK_MS", 1000, minimum=10, unit=ms),
        max_clock_skew_ms=skew,
        metrics_port=reader.integer("METRICS_PORT", 0, minimum=0, maximum=65535),
        decisions_maxlen=reader.integer("DECISIONS_MAXLEN", 0, minimum=0),
        dlq_maxlen=reader.integer("DLQ_MAXLEN", 0, minimum=0),
        input_retention_ms=reader.integer(
            "INPUT_RETENTION_MS", 86_400_000, minimum=0, maximum=90 * 86_400_000, unit=ms
        ),
        probe_targets=_probe_targets(reader, regions),
        probe_interval_ms=reader.integer("PROBE_INTERVAL_MS", 5000, minimum=100, unit=ms),
        probe_timeout_ms=reader.integer("PROBE_TIMEOUT_MS", 2000, minimum=10, unit=ms),
        probe_expect_status=reader.integer("PROBE_EXPECT_STATUS", 200, minimum=100, maximum=599),
        lag_interval_ms=reader.integer("LAG_INTERVAL_MS", 1000, minimum=10, unit=ms),
        lag_window=reader.integer("LAG_WINDOW", 10, minimum=2, maximum=10000),
        kafka=_kafka(reader),
    )
    if reader.errors:
        raise ConfigError("\n".join(reader.errors))
    return settings
