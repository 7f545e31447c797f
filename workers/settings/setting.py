"""The row type of the settings table and what rows are built from: roles, bounds, checks.

:mod:`workers.settings.table` assembles the rows of :mod:`.redis_rows`,
:mod:`.coordinator_rows` and :mod:`.edge_rows` into the one table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

import msgspec

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


def int_row(
    env: str, default: Any, bounds: tuple[int, int, str], help: str, roles: Collection[str]
) -> Setting:
    """A whole-number row: ``bounds`` is (minimum, maximum, unit)."""
    lo, hi, unit = bounds
    return Setting(env, _field(env), "int", default, help, frozenset(roles), lo, hi, unit)


def text_row(env: str, default: Any, help: str, roles: Collection[str], **kw: Any) -> Setting:
    """Any other row (``kind=`` picks the parser; text by default)."""
    kind = kw.pop("kind", "text")
    return Setting(env, _field(env), kind, default, help, frozenset(roles), **kw)


def no_space(limit: int, *banned: str) -> Callable[[str], bool]:
    """A check: no whitespace, none of ``banned``, at most ``limit`` characters."""
    return lambda v: (
        not any(c.isspace() for c in v) and not any(b in v for b in banned) and (len(v) <= limit)
    )


def is_ip_address(text: str) -> bool:
    """A check: ``text`` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Role sets shared by many rows.
COORD = frozenset({COORDINATOR})
COORD_OPS = frozenset({COORDINATOR, OPERATOR})
LONG_RUNNING = frozenset({COORDINATOR, PROBER, LAGMON, BRIDGE, MIRROR, EXECUTOR})
EVERY = LONG_RUNNING | {OPERATOR}
KAFKA_ROLES = frozenset({BRIDGE, MIRROR})
