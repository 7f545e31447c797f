"""workers.settings: defaults, every variable's parsing, and one clear line per bad value."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from workers.coordinator.leadership import ElectorTiming
from workers.settings import (
    DEFAULT_REDIS_URL,
    DEFAULTS,
    MAX_DURATION_MS,
    ROLES,
    ExecutorSettings,
    KafkaSettings,
    ProbeTarget,
    Settings,
    help_text,
    lease_timing_problems,
    load_settings,
    markdown_table,
    read_setting,
)
from workers.settings.__main__ import main as settings_main
from workers.settings.docs import readme_table
from workers.settings.setting import Setting
from workers.settings.table import BY_ENV, TABLE

BASE = {"FAILOVER_REGIONS": "eu-west-1,us-east-1"}
SECRET = "hunter2-Sekr3t"


def _error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, **env})
    return str(info.value)


def test_defaults_follow_the_design() -> None:
    s = load_settings(BASE)
    assert s.regions == ("eu-west-1", "us-east-1")
    assert s.redis_url == DEFAULT_REDIS_URL
    assert s.namespace == "failover"
    assert s.instance_id  # <hostname>-<pid>
    assert "-" in s.instance_id and "#" not in s.instance_id
    assert (s.lease_ttl_ms, s.renew_interval_ms, s.renew_deadline_ms) == (10000, 2000, 6666)
    assert (s.threshold, s.quorum, s.recovery_threshold) == (3, 1, 3)
    assert (s.window_ms, s.stale_after_ms, s.cooldown_ms) == (60000, 30000, 60000)
    assert (s.max_deliveries, s.batch_size) == (5, 500)
    assert (s.reelect_delay_ms, s.reelect_jitter_ms) == (5000, 2000)
    assert (s.shutdown_timeout_ms, s.tick_ms, s.metrics_port) == (5000, 1000, 0)
    assert s.max_clock_skew_ms == 5000
    assert s.input_retention_ms == 86_400_000
    assert s.probe_targets == ()
    assert s.kafka == KafkaSettings()


def test_every_variable_is_read() -> None:
    env = {
        "FAILOVER_REGIONS": " a , b ,c ",
        "FAILOVER_REDIS_URL": "rediss://user:pw@redis.example:6380/2",
        "FAILOVER_NAMESPACE": "{cell-1}",
        "FAILOVER_INSTANCE_ID": "coord-7",
        "FAILOVER_LEASE_TTL_MS": "3000",
        "FAILOVER_RENEW_INTERVAL_MS": "500",
        "FAILOVER_RENEW_DEADLINE_MS": "2000",
        "FAILOVER_THRESHOLD": "4",
        "FAILOVER_QUORUM": "2",
        "FAILOVER_WINDOW_MS": "9000",
        "FAILOVER_STALE_AFTER_MS": "8000",
        "FAILOVER_RECOVERY_THRESHOLD": "5",
        "FAILOVER_COOLDOWN_MS": "0",
        "FAILOVER_MAX_DELIVERIES": "7",
        "FAILOVER_BATCH_SIZE": "100",
        "FAILOVER_REELECT_DELAY_MS": "3000",
        "FAILOVER_REELECT_JITTER_MS": "2000",
        "FAILOVER_SHUTDOWN_TIMEOUT_MS": "1500",
        "FAILOVER_TICK_MS": "250",
        "FAILOVER_MAX_CLOCK_SKEW_MS": "1500",
        "FAILOVER_METRICS_PORT": "9100",
        "FAILOVER_DECISIONS_MAXLEN": "10000",
        "FAILOVER_DLQ_MAXLEN": "500",
        "FAILOVER_INPUT_RETENTION_MS": "3600000",
        "FAILOVER_PROBE_TARGETS": "a=https://a.example/health, b=tcp://b.example:443",
        "FAILOVER_PROBE_INTERVAL_MS": "1000",
        "FAILOVER_PROBE_TIMEOUT_MS": "300",
        "FAILOVER_PROBE_EXPECT_STATUS": "204",
        "FAILOVER_LAG_INTERVAL_MS": "2000",
        "FAILOVER_LAG_WINDOW": "6",
        "FAILOVER_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "FAILOVER_KAFKA_IDEMPOTENT": "no",
        "FAILOVER_KAFKA_AUTO_CREATE_TOPICS": "YES",
        "FAILOVER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FAILOVER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FAILOVER_KAFKA_SASL_USERNAME": "bridge",
        "FAILOVER_KAFKA_SASL_PASSWORD": SECRET,
    }
    s = load_settings(env)
    assert s.regions == ("a", "b", "c")
    assert s.redis_url == "rediss://user:pw@redis.example:6380/2"
    assert (s.namespace, s.instance_id) == ("{cell-1}", "coord-7")
    assert (s.lease_ttl_ms, s.renew_interval_ms, s.renew_deadline_ms) == (3000, 500, 2000)
    assert (s.threshold, s.quorum, s.window_ms, s.stale_after_ms) == (4, 2, 9000, 8000)
    assert (s.recovery_threshold, s.cooldown_ms, s.max_deliveries, s.batch_size) == (5, 0, 7, 100)
    assert (s.reelect_delay_ms, s.reelect_jitter_ms) == (3000, 2000)
    assert (s.shutdown_timeout_ms, s.tick_ms, s.metrics_port) == (1500, 250, 9100)
    assert s.max_clock_skew_ms == 1500
    assert (s.decisions_maxlen, s.dlq_maxlen) == (10000, 500)
    assert s.input_retention_ms == 3_600_000
    assert s.probe_targets == (
        ProbeTarget(region="a", url="https://a.example/health"),
        ProbeTarget(region="b", url="tcp://b.example:443"),
    )
    assert (s.probe_interval_ms, s.probe_timeout_ms, s.probe_expect_status) == (1000, 300, 204)
    assert (s.lag_interval_ms, s.lag_window) == (2000, 6)
    k = s.kafka
    assert (k.bootstrap, k.idempotent, k.auto_create_topics) == ("k1:9092,k2:9092", False, True)
    assert (k.security_protocol, k.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (k.sasl_username, k.sasl_password) == ("bridge", SECRET)


def test_renew_timings_default_from_the_ttl() -> None:
    s = load_settings({**BASE, "FAILOVER_LEASE_TTL_MS": "1500"})
    assert (s.renew_interval_ms, s.renew_deadline_ms) == (300, 1000)
    timing = ElectorTiming.from_settings(s)
    assert (timing.ttl_ms, timing.renew_interval_ms, timing.renew_deadline_ms) == (1500, 300, 1000)
    assert timing.retry_period_ms == 300
    assert (timing.reelect_delay_ms, timing.reelect_jitter_ms, timing.min_reelect_ms) == (
        5000,
        2000,
        1000,
    )


def test_clock_skew_defaults_inside_the_stale_time() -> None:
    # The guard must stay well inside stale_after, or a clock running ahead by less than
    # the allowed skew could still make a healthy region look stale.
    assert load_settings({**BASE, "FAILOVER_STALE_AFTER_MS": "4000"}).max_clock_skew_ms == 2000
    assert load_settings({**BASE, "FAILOVER_MAX_CLOCK_SKEW_MS": "0"}).max_clock_skew_ms == 0


def test_blank_values_mean_unset() -> None:
    s = load_settings({**BASE, "FAILOVER_LEASE_TTL_MS": "  ", "FAILOVER_NAMESPACE": ""})
    assert (s.lease_ttl_ms, s.namespace) == (10000, "failover")


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVER_REGIONS", "x,y")
    monkeypatch.setenv("FAILOVER_TICK_MS", "123")
    s = load_settings()
    assert (s.regions, s.tick_ms) == (("x", "y"), 123)


# (extra env, variable named in the error, words of the rule that must appear)
BAD_VALUES = [
    ({"FAILOVER_LEASE_TTL_MS": "ten"}, "LEASE_TTL_MS", "whole number of milliseconds"),
    ({"FAILOVER_LEASE_TTL_MS": "1.5"}, "LEASE_TTL_MS", "whole number"),
    ({"FAILOVER_LEASE_TTL_MS": "1e4"}, "LEASE_TTL_MS", "whole number"),
    ({"FAILOVER_LEASE_TTL_MS": "-5000"}, "LEASE_TTL_MS", ">= 100"),
    ({"FAILOVER_LEASE_TTL_MS": "99"}, "LEASE_TTL_MS", ">= 100"),
    ({"FAILOVER_LEASE_TTL_MS": "10" * 10}, "LEASE_TTL_MS", f"<= {MAX_DURATION_MS}"),
    ({"FAILOVER_RENEW_INTERVAL_MS": "abc"}, "RENEW_INTERVAL_MS", "whole number"),
    ({"FAILOVER_RENEW_INTERVAL_MS": "5"}, "RENEW_INTERVAL_MS", ">= 10"),
    ({"FAILOVER_RENEW_DEADLINE_MS": "-1"}, "RENEW_DEADLINE_MS", ">= 10"),
    # interval >= deadline (deadline defaulted to 2/3 TTL, then both given)
    ({"FAILOVER_RENEW_INTERVAL_MS": "7000"}, "RENEW_INTERVAL_MS", "< FAILOVER_RENEW_DEADLINE_MS"),
    (
        {"FAILOVER_RENEW_INTERVAL_MS": "3000", "FAILOVER_RENEW_DEADLINE_MS": "3000"},
        "RENEW_INTERVAL_MS",
        "< FAILOVER_RENEW_DEADLINE_MS (3000)",
    ),
    # deadline >= ttl
    ({"FAILOVER_RENEW_DEADLINE_MS": "10000"}, "RENEW_DEADLINE_MS", "< FAILOVER_LEASE_TTL_MS"),
    (
        {"FAILOVER_LEASE_TTL_MS": "1000", "FAILOVER_RENEW_DEADLINE_MS": "1500"},
        "RENEW_DEADLINE_MS",
        "< FAILOVER_LEASE_TTL_MS (1000)",
    ),
    ({"FAILOVER_REGIONS": ""}, "REGIONS", "is required"),
    ({"FAILOVER_REGIONS": " , "}, "REGIONS", "no empty entries"),
    ({"FAILOVER_REGIONS": "eu,,us"}, "REGIONS", "no empty entries"),
    ({"FAILOVER_REGIONS": "eu west,us"}, "REGIONS", "letters, digits"),
    ({"FAILOVER_REGIONS": "eu,us,eu"}, "REGIONS", "must be distinct, eu repeated"),
    ({"FAILOVER_REDIS_URL": "http://cache:6379"}, "REDIS_URL", "must start with redis://"),
    ({"FAILOVER_REDIS_URL": "redis://"}, "REDIS_URL", "has no host"),
    ({"FAILOVER_REDIS_URL": "redis://cache:99999/0"}, "REDIS_URL", "port must be a number"),
    ({"FAILOVER_REDIS_URL": "redis://cache:port/0"}, "REDIS_URL", "port must be a number"),
    ({"FAILOVER_REDIS_URL": "redis://cache:0/0"}, "REDIS_URL", "port 0"),
    ({"FAILOVER_REDIS_URL": "redis://cache/zero"}, "REDIS_URL", "must be a number"),
    ({"FAILOVER_REDIS_URL": "redis://[::1/0"}, "REDIS_URL", "cannot be parsed"),
    ({"FAILOVER_NAMESPACE": "a b"}, "NAMESPACE", "without spaces"),
    ({"FAILOVER_INSTANCE_ID": "coord#1"}, "INSTANCE_ID", "no '#'"),
    ({"FAILOVER_REELECT_DELAY_MS": "999"}, "REELECT_DELAY_MS", ">= 1000"),
    ({"FAILOVER_REELECT_DELAY_MS": "soon"}, "REELECT_DELAY_MS", "whole number"),
    ({"FAILOVER_REELECT_JITTER_MS": "-1"}, "REELECT_JITTER_MS", ">= 0"),
    (
        {"FAILOVER_REELECT_JITTER_MS": "4500"},
        "REELECT_JITTER_MS",
        "FAILOVER_REELECT_DELAY_MS - FAILOVER_REELECT_JITTER_MS must be >= 1000",
    ),
    ({"FAILOVER_THRESHOLD": "0"}, "THRESHOLD", ">= 1"),
    ({"FAILOVER_QUORUM": "two"}, "QUORUM", "whole number"),
    ({"FAILOVER_WINDOW_MS": "0"}, "WINDOW_MS", ">= 1"),
    ({"FAILOVER_COOLDOWN_MS": "-1"}, "COOLDOWN_MS", ">= 0"),
    ({"FAILOVER_MAX_DELIVERIES": "0"}, "MAX_DELIVERIES", ">= 1"),
    ({"FAILOVER_BATCH_SIZE": "0"}, "BATCH_SIZE", ">= 1"),
    ({"FAILOVER_BATCH_SIZE": "100001"}, "BATCH_SIZE", "<= 100000"),
    ({"FAILOVER_SHUTDOWN_TIMEOUT_MS": "10"}, "SHUTDOWN_TIMEOUT_MS", ">= 100"),
    ({"FAILOVER_TICK_MS": "1"}, "TICK_MS", ">= 10"),
    ({"FAILOVER_MAX_CLOCK_SKEW_MS": "-1"}, "MAX_CLOCK_SKEW_MS", ">= 0"),
    (
        {"FAILOVER_MAX_CLOCK_SKEW_MS": "30000"},
        "MAX_CLOCK_SKEW_MS",
        "< FAILOVER_STALE_AFTER_MS (30000) or 0",
    ),
    ({"FAILOVER_METRICS_PORT": "70000"}, "METRICS_PORT", "<= 65535"),
    ({"FAILOVER_DLQ_MAXLEN": "-3"}, "DLQ_MAXLEN", ">= 0"),
    ({"FAILOVER_INPUT_RETENTION_MS": "-1"}, "INPUT_RETENTION_MS", ">= 0"),
    ({"FAILOVER_PROBE_TARGETS": "eu-west-1"}, "PROBE_TARGETS", "region=http(s)://"),
    ({"FAILOVER_PROBE_TARGETS": "=http://x"}, "PROBE_TARGETS", "region=http(s)://"),
    ({"FAILOVER_PROBE_TARGETS": "eu-west-1=ftp://x"}, "PROBE_TARGETS", "region=http(s)://"),
    ({"FAILOVER_PROBE_TARGETS": "ap-south-1=http://x"}, "PROBE_TARGETS", "not in FAILOVER_REGIONS"),
    ({"FAILOVER_PROBE_EXPECT_STATUS": "600"}, "PROBE_EXPECT_STATUS", "<= 599"),
    ({"FAILOVER_PROBE_TIMEOUT_MS": "5"}, "PROBE_TIMEOUT_MS", ">= 10"),
    ({"FAILOVER_LAG_WINDOW": "1"}, "LAG_WINDOW", ">= 2"),
    ({"FAILOVER_KAFKA_IDEMPOTENT": "maybe"}, "KAFKA_IDEMPOTENT", "must be true or false"),
    ({"FAILOVER_KAFKA_AUTO_CREATE_TOPICS": "2"}, "KAFKA_AUTO_CREATE_TOPICS", "true or false"),
    ({"FAILOVER_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "must be one of"),
    ({"FAILOVER_KAFKA_SASL_MECHANISM": "MD5"}, "KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
    ({"FAILOVER_KAFKA_SESSION_TIMEOUT_MS": "10"}, "KAFKA_SESSION_TIMEOUT_MS", ">= 1000"),
]


@pytest.mark.parametrize(("env", "name", "rule"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_each_bad_value_is_one_line_naming_the_variable_and_rule(
    env: dict[str, str], name: str, rule: str
) -> None:
    message = _error(env)
    assert "\n" not in message, message
    assert message.startswith(f"FAILOVER_{name}: "), message
    assert rule in message, message
    value = env.get(f"FAILOVER_{name}", "").strip()
    if value and name != "REDIS_URL":  # the offending value is quoted back
        assert repr(value) in message or value in message, message


def test_missing_regions_is_required() -> None:
    with pytest.raises(ConfigError, match=r"^FAILOVER_REGIONS: is required"):
        load_settings({})


def test_all_bad_values_are_reported_together_one_line_each() -> None:
    message = _error(
        {
            "FAILOVER_REGIONS": "eu,eu",
            "FAILOVER_LEASE_TTL_MS": "x",
            "FAILOVER_QUORUM": "0",
            "FAILOVER_KAFKA_IDEMPOTENT": "perhaps",
            "FAILOVER_REDIS_URL": "http://h",
        }
    )
    lines = message.splitlines()
    assert len(lines) == 5, lines
    named = sorted(line.split(":", 1)[0] for line in lines)
    assert named == sorted(
        [
            "FAILOVER_REGIONS",
            "FAILOVER_LEASE_TTL_MS",
            "FAILOVER_QUORUM",
            "FAILOVER_KAFKA_IDEMPOTENT",
            "FAILOVER_REDIS_URL",
        ]
    )


def test_relational_checks_skip_values_that_did_not_parse() -> None:
    # A bad TTL must not also produce a misleading "deadline must be < TTL" line.
    lines = _error({"FAILOVER_LEASE_TTL_MS": "x", "FAILOVER_RENEW_DEADLINE_MS": "9000"})
    assert lines.splitlines() == [lines] and lines.startswith("FAILOVER_LEASE_TTL_MS:")
    lines = _error({"FAILOVER_REELECT_DELAY_MS": "500", "FAILOVER_REELECT_JITTER_MS": "4500"})
    assert lines.startswith("FAILOVER_REELECT_DELAY_MS:") and "\n" not in lines


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}@cache:99999/0",  # bad port
        f"redis://user:{SECRET}@cache:port/0",  # non-numeric port
        f"http://user:{SECRET}@cache:6379",  # wrong scheme
        f"redis://user:{SECRET}@cache/db",  # bad database
        f"redis://user:{SECRET}@[::1/0",  # unparseable
        f"redis://:{SECRET}@:6379/0",  # no host
        f"user:{SECRET}@cache:6379",  # scheme forgotten
        f"redis://user:{SECRET}/x@cache:6379/0",  # '/' in an unquoted password
        f"redis://cache:0/0?password={SECRET}",  # password as a query parameter
        f"redis://user:{SECRET}\uff20x@cache/0",  # fullwidth @: the parser's own error echoes it
    ],
)
def test_passwords_never_appear_in_errors(url: str) -> None:
    message = _error({"FAILOVER_REDIS_URL": url})
    assert message.startswith("FAILOVER_REDIS_URL: "), message
    assert SECRET not in message, message
    assert "\n" not in message


def test_probe_target_passwords_never_appear_in_errors() -> None:
    message = _error({"FAILOVER_PROBE_TARGETS": f"ap-south-1=https://u:{SECRET}@h/health"})
    assert "not in FAILOVER_REGIONS" in message and SECRET not in message
    message = _error({"FAILOVER_PROBE_TARGETS": f"eu-west-1=ftp://u:{SECRET}@h/"})
    assert "region=http(s)://" in message and SECRET not in message


def test_repr_masks_passwords() -> None:
    s = load_settings(
        {
            **BASE,
            "FAILOVER_REDIS_URL": f"redis://user:{SECRET}@cache:6379/0",
            "FAILOVER_KAFKA_SASL_PASSWORD": SECRET,
            "FAILOVER_PROBE_TARGETS": f"eu-west-1=https://u:{SECRET}@h/health",
        }
    )
    assert s.redis_url.endswith(f"{SECRET}@cache:6379/0")  # the value itself is intact
    assert s.kafka.sasl_password == SECRET
    for text in (repr(s), str(s), f"{s}", repr(s.kafka), s.redacted_url):
        assert SECRET not in text, text
    assert "redis://user:***@cache:6379/0" in repr(s)
    assert "sasl_password='***'" in repr(s)
    assert repr(s).startswith("Settings(regions=('eu-west-1', 'us-east-1'), ")


def test_settings_are_frozen() -> None:
    s = load_settings(BASE)
    with pytest.raises(AttributeError):
        s.lease_ttl_ms = 1  # type: ignore[misc]
    assert isinstance(s, Settings)


# -- the one table: roles, bounds, generated documentation ---------------------------------

# A valid value for every variable some role requires.
REQUIRED_VALUES = {
    "FAILOVER_REGIONS": "eu-west-1,us-east-1",
    "FAILOVER_PROBE_TARGETS": "eu-west-1=http://h/health",
    "FAILOVER_KAFKA_BOOTSTRAP": "k1:9092",
}


def _rows_read_by(role: str) -> list[Setting]:
    return [row for row in TABLE if row.reads(role)]


def test_every_settings_field_is_one_row_of_the_table() -> None:
    fields = [f for f in Settings.__struct_fields__ if f not in ("kafka", "executor")]
    fields += [f"kafka.{f}" for f in KafkaSettings.__struct_fields__]
    fields += [f"executor.{f}" for f in ExecutorSettings.__struct_fields__]
    assert sorted(row.field for row in TABLE) == sorted(fields)
    assert len({row.env for row in TABLE}) == len(TABLE)
    assert all(row.roles and row.roles <= set(ROLES) for row in TABLE), "every row has readers"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_loads_without_the_variables_it_does_not_read(role: str) -> None:
    # Garbage in every variable the role does not read: it must neither demand nor check it.
    env = {row.name: "not valid!" for row in TABLE if not row.reads(role)}
    env |= {name: value for name, value in REQUIRED_VALUES.items() if BY_ENV[name[9:]].reads(role)}
    s = load_settings(env, role=role)
    for row in TABLE:
        if not row.reads(role):
            group, _, name = row.field.rpartition(".")
            value = getattr(getattr(s, group) if group else s, name)
            assert value == getattr(getattr(DEFAULTS, group) if group else DEFAULTS, name), row.env


@pytest.mark.parametrize("role", ["lagmon", "operator", "bridge", "mirror"])
def test_roles_that_do_not_use_regions_start_without_them(role: str) -> None:
    env = {"FAILOVER_KAFKA_BOOTSTRAP": "k1:9092"} if role in ("bridge", "mirror") else {}
    assert load_settings(env, role=role).regions == ()


def test_each_role_refuses_to_start_without_what_it_requires() -> None:
    with pytest.raises(ConfigError, match=r"^FAILOVER_REGIONS: is required"):
        load_settings({}, role="coordinator")
    with pytest.raises(ConfigError, match=r"^FAILOVER_PROBE_TARGETS: is required"):
        load_settings({}, role="prober")
    for role in ("bridge", "mirror"):
        with pytest.raises(ConfigError, match=r"^FAILOVER_KAFKA_BOOTSTRAP: is required"):
            load_settings({}, role=role)


def test_a_command_can_require_a_variable_its_role_reads() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, role="operator", require=("REGIONS",))
    assert str(info.value).startswith("FAILOVER_REGIONS: is required") and "\n" not in str(
        info.value
    )
    assert load_settings(BASE, role="operator", require=("REGIONS",)).regions == (
        "eu-west-1",
        "us-east-1",
    )
    with pytest.raises(ValueError, match="does not read"):
        load_settings({}, role="lagmon", require=("REGIONS",))


def test_a_role_still_checks_what_it_reads() -> None:
    with pytest.raises(ConfigError, match=r"^FAILOVER_LAG_WINDOW: .*>= 2"):
        load_settings({"FAILOVER_LAG_WINDOW": "1"}, role="lagmon")
    # The operator reads the regions when they are set, so probe targets are checked against them.
    with pytest.raises(ConfigError, match="not in FAILOVER_REGIONS"):
        load_settings({**BASE, "FAILOVER_PROBE_TARGETS": "mars=http://h/"}, role="operator")


def test_unknown_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown settings role"):
        load_settings({}, role="coordinater")
    with pytest.raises(ValueError, match="unknown settings role"):
        help_text("nobody")


NUMBERS = [row for row in TABLE if row.kind == "int"]


@pytest.mark.parametrize("row", NUMBERS, ids=[row.env for row in NUMBERS])
def test_every_number_has_both_bounds_and_over_the_maximum_is_one_line(row: Setting) -> None:
    assert row.minimum is not None and row.maximum is not None
    assert row.minimum <= _static(row) <= row.maximum, "the default is inside its bounds"
    too_big = str(row.maximum + 1)
    message = _error({row.name: too_big})
    assert (
        message
        == f"{row.name}: must be a whole number"
        + (" of milliseconds" if row.unit == "ms" else "")
        + f" <= {row.maximum}, got {too_big!r}"
    )


def _static(row: Setting) -> int:
    group, _, name = row.field.rpartition(".")
    value = getattr(getattr(DEFAULTS, group) if group else DEFAULTS, name)
    assert isinstance(value, int)
    return value


def test_derived_defaults_follow_their_inputs_when_unset() -> None:
    s = load_settings({**BASE, "FAILOVER_LEASE_TTL_MS": "30000", "FAILOVER_STALE_AFTER_MS": "6000"})
    assert (s.renew_interval_ms, s.renew_deadline_ms, s.max_clock_skew_ms) == (6000, 20000, 3000)
    # The struct's own defaults are the same derivations of the table's defaults.
    assert (DEFAULTS.renew_interval_ms, DEFAULTS.renew_deadline_ms) == (2000, 6666)
    assert DEFAULTS.max_clock_skew_ms == 5000


def test_the_elector_applies_the_same_lease_timing_rule() -> None:
    assert lease_timing_problems(10000, 2000, 6666) == []
    assert [p[0] for p in lease_timing_problems(1000, 1000, 1000)] == [
        "RENEW_INTERVAL_MS",
        "RENEW_DEADLINE_MS",
    ]
    with pytest.raises(ConfigError, match="FAILOVER_RENEW_DEADLINE_MS must be < "):
        ElectorTiming(ttl_ms=1000, renew_interval_ms=100, renew_deadline_ms=1000, retry_period_ms=1)
    timing = ElectorTiming(
        ttl_ms=1000, renew_interval_ms=100, renew_deadline_ms=500, retry_period_ms=1
    )
    assert (timing.reelect_delay_ms, timing.reelect_jitter_ms) == (
        DEFAULTS.reelect_delay_ms,
        DEFAULTS.reelect_jitter_ms,
    )


@pytest.mark.parametrize("role", ROLES)
def test_help_text_lists_every_variable_of_the_role_and_no_other(role: str) -> None:
    text = help_text(role)
    named = set(re.findall(r"^  (FAILOVER_[A-Z0-9_]+)", text, flags=re.MULTILINE))
    assert named == {row.name for row in _rows_read_by(role)}
    for row in _rows_read_by(role):
        if row.kind == "int":
            assert f"{row.minimum}..{row.maximum}" in text, row.env
    assert "`" not in text  # plain text for a terminal


def test_help_text_marks_what_the_role_requires() -> None:
    assert "FAILOVER_REGIONS  (required)" in help_text("coordinator")
    assert "FAILOVER_REGIONS  (default" in help_text("operator")
    assert "FAILOVER_LEASE_TTL_MS  (default 10000; 100..86400000 ms)" in help_text("coordinator")


def test_readme_configuration_table_is_generated_from_the_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert readme_table(readme) == markdown_table(), (
        "README.md is stale: run python -m workers.settings --readme README.md"
    )
    for row in TABLE:
        assert f"| `{row.name}` |" in markdown_table()


def test_settings_command_prints_the_table_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert settings_main(["--markdown"]) == 0
    assert capsys.readouterr().out.strip() == markdown_table()
    assert settings_main(["lagmon"]) == 0
    assert capsys.readouterr().out.strip() == help_text("lagmon")
    assert settings_main(["--bogus"]) == 2


def test_log_settings_are_rows_of_the_table_and_ignore_case() -> None:
    settings = load_settings(
        {"FAILOVER_LOG_LEVEL": "debug", "FAILOVER_LOG_FORMAT": "JSON"}, role="lagmon"
    )
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert (DEFAULTS.log_level, DEFAULTS.log_format) == ("INFO", "text")
    with pytest.raises(ConfigError) as bad:
        load_settings({"FAILOVER_LOG_LEVEL": "loud"}, role="lagmon")
    assert str(bad.value) == (
        "FAILOVER_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'"
    )


def test_read_setting_checks_one_variable_alone() -> None:
    assert read_setting("LOG_FORMAT", {}) == "text"
    assert read_setting("LOG_FORMAT", {"FAILOVER_LOG_FORMAT": " Json "}) == "json"
    with pytest.raises(ConfigError, match=r"^FAILOVER_LOG_FORMAT: must be one of text, json"):
        read_setting("LOG_FORMAT", {"FAILOVER_LOG_FORMAT": "xml"})
    with pytest.raises(TypeError):
        read_setting("RENEW_INTERVAL_MS", {})  # derived from the TTL: only load_settings knows


def test_a_probers_default_instance_id_is_the_host_name() -> None:
    # Quorum counts observers by name: a prober's name must survive restarts.
    env = {"FAILOVER_REGIONS": "eu", "FAILOVER_PROBE_TARGETS": "eu=http://127.0.0.1:9/"}
    assert load_settings(env, role="prober").instance_id == socket.gethostname()
    coordinator = load_settings(env, role="coordinator").instance_id
    assert coordinator == f"{socket.gethostname()}-{os.getpid()}"


def test_v2_policy_settings_are_validated() -> None:
    base = {"FAILOVER_REGIONS": "eu"}
    with pytest.raises(ConfigError, match="FAILOVER_PANIC_FRACTION: must be a decimal number"):
        load_settings({**base, "FAILOVER_PANIC_FRACTION": "1.5"}, role="coordinator")
    with pytest.raises(ConfigError, match="FAILOVER_OBSERVER_EXPIRY_MS: must be >= "):
        load_settings({**base, "FAILOVER_OBSERVER_EXPIRY_MS": "1000"}, role="coordinator")
    with pytest.raises(ConfigError, match="FAILOVER_OBSERVERS: must be comma-separated"):
        load_settings({**base, "FAILOVER_OBSERVERS": "a,,b"}, role="coordinator")
    s = load_settings({**base, "FAILOVER_OBSERVERS": "a, b", "FAILOVER_PANIC_FRACTION": ".25"},
                      role="coordinator")  # fmt: skip
    assert (s.observers, s.panic_fraction) == (("a", "b"), 0.25)
