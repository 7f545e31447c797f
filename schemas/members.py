"""A process's heartbeat, the hash ``NS:members:<owner>`` (DESIGN §4 v2).

Every long-running process (coordinator, prober, lag monitor, bridge, mirror, executor)
writes one, with a TTL of three heartbeat intervals; ``failoverctl members`` lists them.
Each field is a string in the hash (other languages read it with ``HGETALL``); add fields
with defaults, never rename.
"""

from __future__ import annotations

import msgspec


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """What one process says about itself, and the leader it sees."""

    role: str
    instance: str
    owner: str
    pid: int
    host: str
    version: str
    started_at: float
    """Unix seconds when the process started."""
    at: float
    """Unix seconds of this heartbeat (the writer's clock)."""
    interval_ms: int
    """How often the process writes it (its TTL is three of these)."""
    leader: str = ""
    """The lease owner this process sees ("" when none)."""
    epoch: int = 0
    """The epoch this process sees (its own term's while it leads)."""
    config_version: str = ""
    """The policy configuration version in force as this process knows it ("" = unknown)."""
    config_drift: str = ""
    """Policy settings whose environment value differs from the version in force, as
    ``name env=A in force=B`` separated by ``; `` ("" = none, or not the leader)."""

    def to_fields(self) -> dict[str, str]:
        """The hash fields, every value as a string."""
        return {name: str(getattr(self, name)) for name in self.__struct_fields__}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Heartbeat:
        """Parse a hash read back (unknown fields ignored); ValueError when a required
        field is missing or mistyped."""
        kinds: dict[str, str] = cls.__annotations__  # strings: postponed annotations
        try:
            wanted = {
                name: int(fields[name])
                if kinds[name] == "int"
                else float(fields[name])
                if kinds[name] == "float"
                else fields[name]
                for name in cls.__struct_fields__
                if name in fields
            }
            return msgspec.convert(wanted, cls)
        except (ValueError, msgspec.ValidationError) as exc:
            raise ValueError(f"heartbeat: {exc}") from None
