"""The settings a process of one role reads, parsed and validated from ``FAILOVER_*``.

Each field of :class:`Settings` is one row of :mod:`workers.settings.table`, its default
taken from there. Every bad value is reported at startup, one line per variable naming the
rule it breaks; passwords never appear in the text (URLs are redacted).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from schemas.errors import ConfigError
from streams.address import RedisTarget, parse_sentinels, redact, validate_url, with_tls_files
from workers.settings.parsers import PARSERS, Invalid, ProbeTarget, raw_text
from workers.settings.rules import RULES
from workers.settings.setting import ALL, PREFIX, ROLE_KEY, Derived, Setting, check_role
from workers.settings.table import BY_ENV, TABLE, static_defaults

_STATIC = static_defaults()
_BY_FIELD = {s.field: _STATIC[s.env] for s in TABLE}
DEFAULT_REDIS_URL: str = _STATIC["REDIS_URL"]


def _default(field: str) -> Any:
    return _BY_FIELD[field]


class KafkaSettings(msgspec.Struct, frozen=True):
    """The Kafka edge (bridge and decision mirror); unused unless ``bootstrap`` is set."""

    bootstrap: str = _default("kafka.bootstrap")
    health_topic: str = _default("kafka.health_topic")
    events_topic: str = _default("kafka.events_topic")
    decisions_topic: str = _default("kafka.decisions_topic")
    group: str = _default("kafka.group")
    idempotent: bool = _default("kafka.idempotent")
    auto_create_topics: bool = _default("kafka.auto_create_topics")
    session_timeout_ms: int = _default("kafka.session_timeout_ms")
    security_protocol: str = _default("kafka.security_protocol")
    sasl_mechanism: str = _default("kafka.sasl_mechanism")
    sasl_username: str = _default("kafka.sasl_username")
    sasl_password: str = _default("kafka.sasl_password")
    ssl_cafile: str = _default("kafka.ssl_cafile")

    def __repr__(self) -> str:
        """Like the default repr, with the SASL password masked (settings get logged)."""
        return _masked_repr(self, {"sasl_password": "***" if self.sasl_password else ""})


class ExecutorSettings(msgspec.Struct, frozen=True):
    """The executor's group and action (``FAILOVER_EXECUTOR_*``, DESIGN §8b)."""

    group: str = _default("executor.group")
    webhook_url: str = _default("executor.webhook_url")
    webhook_secret: str = _default("executor.webhook_secret")
    command: str = _default("executor.command")
    timeout_ms: int = _default("executor.timeout_ms")
    attempts: int = _default("executor.attempts")
    backoff_ms: int = _default("executor.backoff_ms")
    claim_idle_ms: int = _default("executor.claim_idle_ms")

    def __repr__(self) -> str:
        """Like the default repr, with the webhook secret masked (settings get logged)."""
        return _masked_repr(
            self,
            {
                "webhook_secret": "***" if self.webhook_secret else "",
                "webhook_url": redact(self.webhook_url),
            },
        )


class Settings(msgspec.Struct, frozen=True):
    """Everything a process is configured with; each field is one row of the table."""

    regions: tuple[str, ...] = _default("regions")
    redis_url: str = _default("redis_url")
    namespace: str = _default("namespace")
    instance_id: str = _default("instance_id")
    lease_ttl_ms: int = _default("lease_ttl_ms")
    renew_interval_ms: int = _default("renew_interval_ms")
    renew_deadline_ms: int = _default("renew_deadline_ms")
    threshold: int = _default("threshold")
    quorum: int = _default("quorum")
    window_ms: int = _default("window_ms")
    stale_after_ms: int = _default("stale_after_ms")
    recovery_threshold: int = _default("recovery_threshold")
    cooldown_ms: int = _default("cooldown_ms")
    panic_fraction: float = _default("panic_fraction")
    panic_hold_ms: int = _default("panic_hold_ms")
    manual_max_age_ms: int = _default("manual_max_age_ms")
    max_observers: int = _default("max_observers")
    observers: tuple[str, ...] = _default("observers")
    observer_expiry_ms: int = _default("observer_expiry_ms")
    max_deliveries: int = _default("max_deliveries")
    batch_size: int = _default("batch_size")
    reelect_delay_ms: int = _default("reelect_delay_ms")
    reelect_jitter_ms: int = _default("reelect_jitter_ms")
    shutdown_timeout_ms: int = _default("shutdown_timeout_ms")
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")
    tick_ms: int = _default("tick_ms")
    max_clock_skew_ms: int = _default("max_clock_skew_ms")
    metrics_port: int = _default("metrics_port")
    metrics_addr: str = _default("metrics_addr")
    decisions_maxlen: int = _default("decisions_maxlen")
    dlq_maxlen: int = _default("dlq_maxlen")
    max_entry_bytes: int = _default("max_entry_bytes")
    allow_eviction: bool = _default("allow_eviction")
    redis_tls_ca: str = _default("redis_tls_ca")
    redis_tls_cert: str = _default("redis_tls_cert")
    redis_tls_key: str = _default("redis_tls_key")
    input_retention_ms: int = _default("input_retention_ms")
    redis_sentinels: str = _default("redis_sentinels")
    redis_sentinel_master: str = _default("redis_sentinel_master")
    redis_sentinel_username: str = _default("redis_sentinel_username")
    redis_sentinel_password: str = _default("redis_sentinel_password")
    min_replicas: int = _default("min_replicas")
    heartbeat_interval_ms: int = _default("heartbeat_interval_ms")
    probe_targets: tuple[ProbeTarget, ...] = _default("probe_targets")
    probe_interval_ms: int = _default("probe_interval_ms")
    probe_timeout_ms: int = _default("probe_timeout_ms")
    probe_expect_status: int = _default("probe_expect_status")
    lag_interval_ms: int = _default("lag_interval_ms")
    lag_window: int = _default("lag_window")
    kafka: KafkaSettings = KafkaSettings()
    executor: ExecutorSettings = ExecutorSettings()

    @property
    def redacted_url(self) -> str:
        """Where Redis is, with any password masked, for logs (the Sentinels too if set)."""
        return self.redis_target.describe()

    @property
    def redis_target(self) -> RedisTarget:
        """What :func:`streams.connection.connect` needs: the URL, and Sentinel if set."""
        return RedisTarget(
            url=self.redis_url,
            sentinels=parse_sentinels(self.redis_sentinels) if self.redis_sentinels else (),
            sentinel_master=self.redis_sentinel_master,
            sentinel_username=self.redis_sentinel_username,
            sentinel_password=self.redis_sentinel_password,
        )

    def __repr__(self) -> str:
        """Like the default repr, with passwords masked (settings get logged)."""
        return _masked_repr(
            self,
            {
                "redis_url": redact(self.redis_url),
                "redis_sentinel_password": "***" if self.redis_sentinel_password else "",
                "probe_targets": tuple(
                    ProbeTarget(region=t.region, url=redact(t.url)) for t in self.probe_targets
                ),
            },
        )


# The table's defaults as a typed value, for code that needs one default (ElectorTiming).
DEFAULTS = Settings()


def _masked_repr(obj: msgspec.Struct, masked: Mapping[str, object]) -> str:
    fields = ", ".join(
        f"{name}={masked.get(name, getattr(obj, name))!r}" for name in obj.__struct_fields__
    )
    return f"{type(obj).__name__}({fields})"


def _line(env: str, rule: str, shown: str | None = None) -> str:
    return f"{PREFIX}{env}: {rule}" + ("" if shown is None else f", got {shown!r}")


# -- loading --------------------------------------------------------------------------


def load_settings(
    env: Mapping[str, str] | None = None, *, role: str = ALL, require: Collection[str] = ()
) -> Settings:
    """Build and validate the settings ``role`` reads from ``env`` (default: the process
    environment); the variables it does not read keep their defaults.

    ``require`` names further variables (without prefix) this run cannot do without, e.g.
    ``REGIONS`` for the failoverctl commands that use it. Raises :class:`ConfigError` whose
    message has one line per bad variable.
    """
    check_role(role)
    unknown = [name for name in require if name not in BY_ENV or not BY_ENV[name].reads(role)]
    if unknown:
        raise ValueError(f"the {role} does not read {', '.join(unknown)}")
    source = os.environ if env is None else env
    values = dict(_STATIC)
    errors: list[str] = []
    failed: set[str] = set()
    unset: list[Setting] = []
    rows = [row for row in TABLE if row.reads(role)]
    for row in rows:
        text = raw_text(row, source)
        if text is None:
            unset.append(row)
            if row.requires(role) or row.env in require:
                errors.append(_line(row.env, f"is required: {row.hint}"))
                failed.add(row.env)
            continue
        try:
            values[row.env] = text if row.kind == "secret" else PARSERS[row.kind](row, text, values)
        except Invalid as bad:
            errors.append(_line(row.env, bad.rule, bad.shown))
            failed.add(row.env)
    values[ROLE_KEY] = role
    for row in unset:
        if isinstance(row.default, Derived):
            values[row.env] = row.default.compute(values)
    read = {row.env for row in rows}
    for names, check in RULES:
        if read.issuperset(names) and failed.isdisjoint(names):  # compare only parsed values
            errors.extend(_line(env, rule, str(value)) for env, rule, value in check(values))
    if read.issuperset(("REDIS_URL", "REDIS_TLS_CA")) and "REDIS_URL" not in failed:
        _apply_tls(values, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    return _build(values)


def _apply_tls(values: dict[str, Any], errors: list[str]) -> None:
    """Fold ``FAILOVER_REDIS_TLS_*`` into the Redis URL (every client is built from it)."""
    ca, cert, key = values["REDIS_TLS_CA"], values["REDIS_TLS_CERT"], values["REDIS_TLS_KEY"]
    if not (ca or cert or key):
        return
    if bool(cert) != bool(key):
        missing = "REDIS_TLS_KEY" if cert else "REDIS_TLS_CERT"
        errors.append(_line(missing, "is required with a client certificate or key"))
        return
    if not values["REDIS_URL"].startswith("rediss://"):
        errors.append(_line("REDIS_URL", "must be rediss:// when FAILOVER_REDIS_TLS_* is set"))
        return
    merged = with_tls_files(values["REDIS_URL"], ca, cert, key)
    try:
        validate_url(merged)
    except ConfigError as exc:  # names the file; the URL in it is redacted
        errors.append(_line("REDIS_TLS_CA" if ca else "REDIS_TLS_CERT", str(exc)))
        return
    values["REDIS_URL"] = merged


def read_setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One variable (``name`` without prefix) on its own, checked as :func:`load_settings`
    checks it, or its default when unset; ConfigError with its one line if invalid."""
    row = BY_ENV[name]
    if isinstance(row.default, Derived):
        raise TypeError(f"{row.name} has a derived default: load it with load_settings")
    text = raw_text(row, os.environ if env is None else env)
    if text is None:
        return row.default
    try:
        return text if row.kind == "secret" else PARSERS[row.kind](row, text, {})
    except Invalid as bad:
        raise ConfigError(_line(row.env, bad.rule, bad.shown)) from None


def _build(values: Mapping[str, Any]) -> Settings:
    parts: dict[str, dict[str, Any]] = {"": {}, "kafka": {}, "executor": {}}
    for row in TABLE:
        group, _, name = row.field.rpartition(".")
        parts[group][name] = values[row.env]
    return Settings(
        **parts[""],
        kafka=KafkaSettings(**parts["kafka"]),
        executor=ExecutorSettings(**parts["executor"]),
    )
