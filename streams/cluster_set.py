"""A Redis Cluster of three primaries on free loopback ports (tests, bench).

Every node is a :class:`~streams.server.RedisServer` started with ``--cluster-enabled yes``
(its own session, killed when the process that started it is gone). The cluster is formed
with plain commands (``CLUSTER ADDSLOTSRANGE``, ``CLUSTER MEET``), so it needs no
``redis-cli``; :meth:`ClusterSet.migrate_slot` moves one slot the way ``redis-cli --cluster
reshard`` does (``SETSLOT IMPORTING/MIGRATING``, ``MIGRATE``, ``SETSLOT NODE``), for tests
that reshard under a running fleet.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.crc import key_slot

from streams.server import RedisServer, free_port

SLOTS = 16384


class ClusterSet:
    """``primaries`` cluster nodes, each owning an equal range of the 16384 slots."""

    def __init__(self, *, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        # The bus ports are named: port + 10000 is past 65535 for a high free port.
        self.bus_ports = [free_port() for _ in range(primaries)]
        self.servers = [
            RedisServer(extra_args=[*_cluster_args(node_timeout_ms), "--cluster-port", str(bus)])
            for bus in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """The URL of the first node: any node serves as the entry point."""
        return self.servers[0].url

    def entry_url(self, namespace: str) -> str:
        """The URL of a node that does not own ``namespace``'s slot: a client given it must
        follow a ``MOVED`` before its first keyed command succeeds."""
        owner = self.owner(self.slot(namespace + ":"))
        return next(s for s in self.servers if s is not owner).url

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the nodes, give each its slot range, join them, wait for ``cluster_state:ok``."""
        for server in self.servers:
            server.start()
        count = len(self.servers)
        for index, server in enumerate(self.servers):
            with _client(server) as client:
                # Distinct config epochs: no collision for the cluster to resolve first.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                first, last = index * SLOTS // count, (index + 1) * SLOTS // count - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with _client(self.servers[0]) as client:
            for server, bus in zip(self.servers[1:], self.bus_ports[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, bus)
        self.wait_ok(timeout_s)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Wait until every node knows every other and says ``cluster_state:ok``, and all
        agree on who owns each slot."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._settled():
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not settle")

    def _settled(self) -> bool:
        views = []
        for server in self.servers:
            with _client(server) as client:
                try:
                    info: Any = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                    if fields.get("cluster_state") != "ok":
                        return False
                    if int(fields.get("cluster_known_nodes", 0)) != len(self.servers):
                        return False
                    views.append(self._owners(client))
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    return False
        return all(view == views[0] for view in views)

    @staticmethod
    def _owners(client: redis.Redis) -> list[tuple[int, int, int]]:
        rows: Any = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        # redis-py parses CLUSTER SLOTS into {(first, last): {"primary": (host, port), ...}}.
        if isinstance(rows, dict):
            return sorted(
                (int(first), int(last), int(node["primary"][1]))
                for (first, last), node in rows.items()
            )
        return sorted((int(row[0]), int(row[1]), int(row[2][1])) for row in rows)

    def node_id(self, server: RedisServer) -> str:
        """The cluster node id of ``server``."""
        with _client(server) as client:
            node: Any = client.execute_command("CLUSTER", "MYID")
        return node.decode() if isinstance(node, bytes) else str(node)

    def owner(self, slot: int) -> RedisServer:
        """The node that owns ``slot`` now (as the first node sees it)."""
        with _client(self.servers[0]) as client:
            for first, last, port in self._owners(client):
                if first <= slot <= last:
                    return next(s for s in self.servers if s.port == port)
        raise RuntimeError(f"no node owns slot {slot}")

    @staticmethod
    def slot(key: str) -> int:
        """The hash slot of ``key`` (its hash tag's, if it has one)."""
        return int(key_slot(key.encode()))

    def migrate_slot(self, slot: int, target: RedisServer, *, pause_s: float = 0.0) -> int:
        """Move ``slot`` with its keys to ``target``, as a reshard does; returns how many
        keys moved. ``pause_s`` holds the slot half-moved (MIGRATING/IMPORTING) after the
        first key, so a test can run commands while clients meet ASK and MOVED."""
        source = self.owner(slot)
        if source is target:
            return 0
        source_id, target_id = self.node_id(source), self.node_id(target)
        moved = 0
        with _client(source) as src, _client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                batch: Any = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
                if not batch:
                    break
                src.execute_command(
                    "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *batch
                )
                moved += len(batch)
                if moved == 1 and pause_s:
                    time.sleep(pause_s)
            for server in (target, source, *self.servers):
                with _client(server) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_ok()
        return moved

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for server in self.servers:
            server.stop()


def _cluster_args(node_timeout_ms: int) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",  # in the node's own --dir
        "--cluster-node-timeout", str(node_timeout_ms),
    ]  # fmt: skip


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5)
