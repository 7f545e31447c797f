"""Every Redis key and channel name of the wire contract (DESIGN §3), built in this one place.

For Redis Cluster, give a hash-tagged namespace (``{failover}``) so every key a script
touches hashes to one slot.
"""

from __future__ import annotations

from typing import Final

import msgspec

GROUP = "coordinator"
"""Consumer group the leader reads ``health`` and ``events`` through."""


class StateField:
    """Field names of the ``NS:state`` hash, written by the fenced commit only."""

    POLICY: Final = "policy"
    """The complete policy state (msgspec JSON), what a new leader continues from."""
    SUMMARY: Final = "summary"
    """:class:`schemas.state.PolicySummary` as JSON, what ``status`` shows."""
    EPOCH: Final = "epoch"
    """The epoch of the leader that committed last."""
    LEADER: Final = "leader"
    """The owner id of the leader that committed last."""
    UPDATED_AT: Final = "updated_at"
    """When that commit was made (unix seconds, the leader's clock)."""
    COMMIT: Final = "commit"
    """The token (``epoch:sequence``) of the last commit; set by the COMMIT script itself."""


class Keys(msgspec.Struct, frozen=True):
    """Key names under one namespace."""

    namespace: str

    @property
    def health(self) -> str:
        """Stream of health events."""
        return f"{self.namespace}:health"

    @property
    def events(self) -> str:
        """Stream of failover events (operators, executors)."""
        return f"{self.namespace}:events"

    @property
    def decisions(self) -> str:
        """Stream of decisions, written by the leader only."""
        return f"{self.namespace}:decisions"

    @property
    def held_decisions(self) -> str:
        """List of decisions committed but not yet visible (``FAILOVER_MIN_REPLICAS`` > 0):
        they move to :attr:`decisions` once a ``WAIT`` confirmed them on the replicas."""
        return f"{self.namespace}:decisions:held"

    @property
    def held_mark(self) -> str:
        """Token of the last confirmation round over the held decisions (the write a
        ``WAIT`` confirms, written by the publish script only)."""
        return f"{self.namespace}:decisions:held:mark"

    @property
    def primary(self) -> str:
        """The replication id (``master_replid``) of the primary the lease was last taken
        or contended on: a different one means the primary changed (quarantine)."""
        return f"{self.namespace}:primary"

    @property
    def quarantine(self) -> str:
        """Present (with a TTL of one lease TTL) while no one may acquire the lease after
        a primary change; its value is the new primary's replication id."""
        return f"{self.namespace}:primary:quarantine"

    @property
    def dlq(self) -> str:
        """Stream of dead letters, written by the leader only."""
        return f"{self.namespace}:dlq"

    @property
    def leader(self) -> str:
        """Lease key: value is the owner id, with a TTL."""
        return f"{self.namespace}:leader"

    @property
    def epoch(self) -> str:
        """Fencing epoch, incremented by the acquire script only."""
        return f"{self.namespace}:leader:epoch"

    @property
    def released(self) -> str:
        """Pub/sub channel the release script publishes on."""
        return f"{self.namespace}:leader:released"

    @property
    def step_down(self) -> str:
        """Pub/sub channel ``failoverctl step-down`` publishes the leader's owner id on."""
        return f"{self.namespace}:leader:stepdown"

    def member(self, owner: str) -> str:
        """Heartbeat hash of one process (TTL: three heartbeat intervals)."""
        return f"{self.namespace}:members:{owner}"

    @property
    def members(self) -> str:
        """Sorted set of every owner that sent a heartbeat, scored by its last one (unix
        ms); it remembers a process after its hash expired, so a missing one can be named."""
        return f"{self.namespace}:members"

    @property
    def members_last(self) -> str:
        """Hash owner -> the last heartbeat as JSON, for the processes that went missing."""
        return f"{self.namespace}:members:last"

    def read_guard(self, owner: str) -> str:
        """Transient key proving, inside one fenced read's transaction, that ``owner`` leads.

        Created and deleted within the same MULTI/EXEC (see ``streams/lua/read_guard.lua``);
        it never outlives the transaction.
        """
        return f"{self.namespace}:leader:guard:{owner}"

    @property
    def state(self) -> str:
        """Hash holding the complete policy state, written by the fenced commit only."""
        return f"{self.namespace}:state"

    @property
    def input_streams(self) -> tuple[str, str]:
        """The two streams the leader consumes, in read order."""
        return (self.health, self.events)

    def executor(self, group: str) -> str:
        """Hash of one executor group: position, highest epoch seen, one record per decision."""
        return f"{self.namespace}:executor:{group}"

    def executor_order(self, group: str) -> str:
        """List of the decision ids one executor group finished, oldest first (retention)."""
        return f"{self.namespace}:executor:{group}:order"

    def region_health(self, region: str) -> str:
        """Latest health snapshot of one region (TTL 60 s)."""
        return f"{self.namespace}:region:health:{region}"
