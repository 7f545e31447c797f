"""The minimal Redis ACL of each process role (DESIGN §3, "Roles and access").

One table, used three ways: the README's ACL table is checked against it, the test suite
runs each role's real work under exactly these rules (``ACL SETUSER``), and
:func:`setuser_rules` prints them for an operator. Commands run *inside* the Lua scripts
count too (Redis checks a script's ``redis.call`` against the caller's ACL), so the
coordinator's list includes what its scripts call. ``NS`` is the namespace; key patterns
escape its glob characters. (``%R~`` read-only key grants do not work for roles that run
scripts: Redis requires full access to the keys an EVALSHA names.)
"""

from __future__ import annotations

import re

import msgspec


class RoleAcl(msgspec.Struct, frozen=True):
    """What one role may do: commands (``cmd`` or ``cmd|subcommand``), keys, channels."""

    role: str
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    channels: tuple[str, ...] = ()
    note: str = ""


# Every long-running process names its connection (CLIENT SETNAME), pings, and writes its
# heartbeat NS:members:<owner> (streams/members.py): it reads the lease to say whom it sees,
# writes the hash and the fleet index in one transaction, and prunes old index entries.
_PROCESS = (
    "client|setname",
    "ping",
    "get",
    "multi",
    "exec",
    "del",
    "hset",
    "pexpire",
    "zadd",
    "zrem",
    "hdel",
    "zrangebyscore",
)
_MEMBER_KEYS = ("NS:members", "NS:members:*", "NS:leader", "NS:leader:epoch")
# failoverctl and the lag monitor read the lag snapshot (one script) and the state.
_SNAPSHOT = (
    "evalsha",
    "script|load",
    "get",
    "pttl",
    "time",
    "type",
    "xinfo|groups",
    "xlen",
    "xrange",
    "hmget",
)

ROLES: tuple[RoleAcl, ...] = (
    RoleAcl(
        "coordinator",
        (
            *_PROCESS,
            "info",  # maxmemory-policy (INFO memory); the primary's replid (acquire script)
            "wait",  # FAILOVER_MIN_REPLICAS: a lease counts once replicas confirm it
            "evalsha",
            "script|load",
            "multi",
            "exec",
            "time",
            "subscribe",
            # the fenced read outside its script, and group setup
            "xreadgroup",
            "del",
            "xgroup|create",
            "xinfo|groups",
            # called inside the lease, read, claim, prune, commit and trim scripts
            "get",
            "set",
            "incr",
            "pexpire",
            "pttl",
            "publish",
            "exists",
            "type",
            "hget",
            "hset",
            "xack",
            "xadd",
            "xautoclaim",
            "xgroup|delconsumer",
            "xinfo|consumers",
            "xlen",
            "xpending",
            "xrange",
            "xtrim",
            # held decisions (FAILOVER_MIN_REPLICAS > 0): the commit and publish scripts
            "rpush",
            "lrange",
            "ltrim",
            "llen",
        ),
        ("NS:*",),
        ("NS:leader:released", "NS:leader:stepdown"),
    ),
    RoleAcl(
        "prober",
        (*_PROCESS, "xadd", "set"),
        ("NS:health", "NS:region:health:*", *_MEMBER_KEYS),
    ),
    RoleAcl(
        "producer",
        ("xadd",),
        ("NS:health",),
        note="an event producer (executor, operator tooling) gets `~NS:events` instead",
    ),
    RoleAcl(
        "executor",
        (
            *_PROCESS,
            "evalsha",
            "script|load",
            "xgroup|create",
            "xreadgroup",
            "xack",
            "xautoclaim",
            "xinfo|groups",
            "exists",
            "hmget",
            # called inside the executor_begin / executor_settle scripts
            "time",
            "hget",
            "hincrby",
            "xrange",
            "xadd",
            "rpush",
            "llen",
            "lpop",
        ),
        ("NS:decisions", "NS:events", "NS:executor:*", *_MEMBER_KEYS),
        note="follows NS:decisions with its own group",
    ),
    RoleAcl(
        "operator",
        (
            *_SNAPSHOT,
            "info",
            "mget",
            "llen",  # members: held decisions
            "xread",
            "xadd",
            "xdel",
            "hget",
            "exists",
            "zrangebyscore",
            "hgetall",
            "publish",
            # `members` prunes the fleet index of long-gone entries (one MULTI)
            "multi",
            "exec",
            "zrem",
            "hdel",
        ),
        ("NS:*",),
        ("NS:leader:stepdown",),
        note="failoverctl; `dlq replay`/`emit`/`pause`/`config set` write, `step-down` publishes,"
        " everything else reads",
    ),
    RoleAcl(
        "lagmon",
        (*_PROCESS, *_SNAPSHOT),
        ("NS:*",),
        note="read-only by its commands (EVALSHA needs write access to the keys it names)",
    ),
    RoleAcl(
        "bridge",
        # Its appends are one script (streams/lua/append.lua); the XADDs inside are checked.
        (*_PROCESS, "xadd", "evalsha", "script|load"),
        ("NS:health", "NS:events", *_MEMBER_KEYS),
    ),
    RoleAcl(
        "mirror",
        (*_PROCESS, "xgroup|create", "xreadgroup", "xack", "xautoclaim", "xinfo|groups", "exists"),
        ("NS:decisions", *_MEMBER_KEYS),
    ),
)
BY_ROLE = {acl.role: acl for acl in ROLES}

_GLOB = re.compile(r"([*?\[\]\\])")


def _pattern(template: str, namespace: str) -> str:
    """``NS:...`` with the namespace put in (its glob characters escaped)."""
    return template.replace("NS", _GLOB.sub(r"\\\1", namespace), 1)


def setuser_rules(role: str, namespace: str) -> list[str]:
    """The ``ACL SETUSER <user>`` rules of ``role`` (without ``on`` and the password)."""
    acl = BY_ROLE[role]
    rules = ["resetkeys", "resetchannels", "-@all"]
    rules += [f"+{command}" for command in dict.fromkeys(acl.commands)]
    rules += [f"~{_pattern(key, namespace)}" for key in acl.keys]
    rules += [f"&{_pattern(channel, namespace)}" for channel in acl.channels]
    return rules
