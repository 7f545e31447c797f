"""The coordinator's Lua scripts (``streams/lua/*.lua``): loaded once, preludes prepended.

Each script's file states its contract and names its KEYS and ARGV as locals. Shared code
(the lease fence, stream-id arithmetic) lives once in ``streams/lua/prelude/`` and is put
in front of the scripts that use it. Scripts run atomically in Redis, so each
check-then-write cannot interleave with another client's command. Keys are passed in KEYS
(never built inside a script) so a hash-tagged namespace keeps them in one Cluster slot.

Scripts are run by SHA (EVALSHA), never by sending their text on each call: redis-py's
registered scripts reload themselves on NOSCRIPT; a script queued inside a transaction
cannot, so its caller loads it first (:func:`load`) and retries once on NOSCRIPT.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files
from typing import Literal
from weakref import WeakKeyDictionary

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from streams.keys import StateField

Name = Literal[
    "acquire",
    "renew",
    "release",
    "read_guard",
    "claim",
    "prune",
    "commit",
    "lag_snapshot",
    "dlq_replay",
    "trim_input",
    "executor_begin",
    "executor_settle",
    "entry_chunk",
    "input_waiting",
    "publish",
    "append",
]

# Which preludes each script needs, in the order they are prepended.
_PRELUDES: dict[Name, tuple[str, ...]] = {
    "acquire": (),
    "renew": ("lease",),
    "release": ("lease",),
    "read_guard": ("lease", "ids", "entries"),
    "claim": ("lease", "entries"),
    "prune": ("lease",),
    "commit": ("lease", "ids", "trim", "state_fields"),
    "lag_snapshot": ("state_fields",),
    "dlq_replay": (),
    "trim_input": ("lease", "ids"),
    "executor_begin": ("ids",),
    "executor_settle": ("ids",),
    "entry_chunk": ("entries",),
    "input_waiting": ("ids",),
    "publish": ("lease", "ids", "trim"),
    "append": (),
}

_registered: WeakKeyDictionary[aioredis.Redis, dict[Name, AsyncScript]] = WeakKeyDictionary()


def _read(relative: str) -> str:
    return files("streams").joinpath("lua", *relative.split("/")).read_text(encoding="utf-8")


def _state_fields() -> str:
    # Generated, so the NS:state field names stay written once (streams/keys.py).
    rows = "".join(
        f"  {attr.lower()} = '{value}',\n"
        for attr, value in vars(StateField).items()
        if attr.isupper()
    )
    header = "-- The NS:state field names (streams.keys.StateField).\n"
    return f"{header}local state_field = {{\n{rows}}}\n"


def _prelude(name: str) -> str:
    return _state_fields() if name == "state_fields" else _read(f"prelude/{name}.lua")


@cache
def source(name: Name) -> str:
    """The full text Redis runs for script ``name``: its preludes, then the script."""
    parts = [_prelude(prelude) for prelude in _PRELUDES[name]]
    parts.append(_read(f"{name}.lua"))
    return "\n".join(parts)


@cache
def sha(name: Name) -> str:
    """The SHA1 Redis knows script ``name`` by (for EVALSHA)."""
    return hashlib.sha1(source(name).encode(), usedforsecurity=False).hexdigest()


def register(redis: aioredis.Redis, name: Name) -> AsyncScript:
    """Script ``name`` for ``redis``, created once per client; runs by EVALSHA, loading
    itself on NOSCRIPT (first use, server restart, SCRIPT FLUSH)."""
    per_client = _registered.setdefault(redis, {})
    script = per_client.get(name)
    if script is None:
        script = per_client[name] = redis.register_script(source(name))
    return script


async def load(redis: aioredis.Redis, name: Name) -> str:
    """SCRIPT LOAD ``name`` so a transaction can EVALSHA it; returns its SHA1."""
    loaded: str = await redis.script_load(source(name))
    return loaded
