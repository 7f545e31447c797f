"""A replicated Redis on free loopback ports: a primary, replicas and Sentinels (tests, bench).

Every process is a :class:`~streams.server.RedisServer` (its own session, killed when the
process that started it is gone). The Sentinels watch the primary under ``master`` with a
short ``down-after-milliseconds``, so a killed or paused primary is replaced in about a
second; a quorum of 2 of 3 Sentinels must agree it is down (ODOWN) before one leads the
promotion.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from streams.server import RedisServer


class ReplicaSet:
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels watching them.

    With ``sentinel_password`` the Sentinels require it from clients and use it with each
    other (``requirepass`` + ``sentinel sentinel-pass``).
    """

    def __init__(
        self,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        master: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        sentinel_password: str = "",
    ) -> None:
        self.master = master
        self.down_after_ms = down_after_ms
        self.primary_server = RedisServer(extra_args=_FAST_SYNC)
        port = self.primary_server.port
        self.servers = [self.primary_server] + [
            RedisServer(extra_args=[*_FAST_SYNC, "--replicaof", "127.0.0.1", str(port)])
            for _ in range(replicas)
        ]
        quorum = sentinels // 2 + 1
        config = (
            f"sentinel monitor {master} 127.0.0.1 {port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
            f"sentinel failover-timeout {master} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {master} {replicas or 1}\n"
        )
        if sentinel_password:
            config += (
                f"requirepass {sentinel_password}\nsentinel sentinel-pass {sentinel_password}\n"
            )
        self.sentinel_password = sentinel_password
        self.sentinels = [
            RedisServer(sentinel_config=config, password=sentinel_password or None)
            for _ in range(sentinels)
        ]

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """The Sentinels as ``(host, port)`` pairs."""
        return tuple(("127.0.0.1", s.port) for s in self.sentinels)

    @property
    def sentinels_setting(self) -> str:
        """The Sentinels as ``FAILOVER_REDIS_SENTINELS`` expects them."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)

    @property
    def url(self) -> str:
        """A URL for the options (db); its host and port are unused through Sentinel."""
        return "redis://127.0.0.1:1/0"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start everything and wait until the replicas are in sync and Sentinels agree."""
        for server in self.servers + self.sentinels:
            server.start()
        self.wait_stable(timeout_s)

    def by_port(self, port: int) -> RedisServer:
        """The data server on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def primary_port(self) -> int:
        """The port of the primary as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            client = self._sentinel_client(sentinel)
            try:
                addr: Any = client.sentinel_get_master_addr_by_name(self.master)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
            if addr:
                return int(addr[1])
        raise RuntimeError("no sentinel answered")

    def primary(self) -> RedisServer:
        """The server Sentinel currently names as the primary."""
        return self.by_port(self.primary_port())

    def rejoin(self, server: RedisServer) -> None:
        """Start a killed data server again as a replica of the current primary.

        Its own command line would make the original primary a primary again (empty, until
        Sentinel demotes it seconds later) and point a replica at a port that may no longer
        be the primary; starting it with ``--replicaof`` the primary Sentinel names avoids
        both, as an operator bringing a node back would.
        """
        primary = self.primary_port()
        if primary == server.port:
            raise RuntimeError(f"{server.port} is still the primary Sentinel names")
        server.extra_args = [*_FAST_SYNC, "--replicaof", "127.0.0.1", str(primary)]
        server.start()

    def wait_switch(self, old_port: int, timeout_s: float = 30.0) -> int:
        """Wait until every answering Sentinel names a primary other than ``old_port``."""
        deadline = time.monotonic() + timeout_s
        ports: list[int] = []
        while time.monotonic() < deadline:
            ports = self._named_primaries()
            if ports and old_port not in ports and len(set(ports)) == 1:
                return ports[0]
            time.sleep(0.02)
        raise RuntimeError(
            f"sentinels did not replace the primary on {old_port}: they name {ports}; "
            f"servers: {self._roles()}"
        )

    def first_switch(self, old_port: int, timeout_s: float = 30.0) -> float:
        """Monotonic time at which the first Sentinel names a primary other than
        ``old_port`` (``SENTINEL GET-MASTER-ADDR-BY-NAME``, every Sentinel polled every
        10 ms): the failover leader, as it starts reconfiguring the replicas."""
        clients = [self._sentinel_client(sentinel) for sentinel in self.sentinels]
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for client in clients:
                    try:
                        addr: Any = client.sentinel_get_master_addr_by_name(self.master)
                    except (redis.ConnectionError, redis.TimeoutError):
                        continue
                    if addr and int(addr[1]) != old_port:
                        return time.monotonic()
                time.sleep(0.01)
        finally:
            for client in clients:
                client.close()
        raise RuntimeError(f"no sentinel replaced the primary on {old_port} within {timeout_s}s")

    def _roles(self) -> dict[int, str]:
        roles = {}
        for server in self.servers:
            client = redis.Redis(port=server.port, socket_timeout=0.5)
            try:
                info: Any = client.info("replication")
                roles[server.port] = f"{info['role']} of {info.get('master_port', '-')}"
            except (redis.ConnectionError, redis.TimeoutError):
                roles[server.port] = "down"
            finally:
                client.close()
        return roles

    def wait_stable(self, timeout_s: float = 30.0) -> None:
        """Wait until one primary is named by all Sentinels, every live replica is
        connected to it, and each Sentinel sees the others and every replica."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._stable():
                return
            time.sleep(0.05)
        raise RuntimeError("the replica set did not settle")

    def wait_synced(self, timeout_s: float = 60.0) -> None:
        """:meth:`wait_stable`, then wait until a write on the primary is acknowledged
        (``WAIT``) by every live replica and every Sentinel sees each of them up with its
        link to the primary ``ok``: a replica just started has finished its full sync and
        counts as a candidate, so the next promotion cannot stall on it or pick it empty."""
        self.wait_stable(timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
            if not all(self._replicas_ok(sentinel, len(live) - 1) for sentinel in self.sentinels):
                time.sleep(0.1)
                continue
            client = redis.Redis(port=self.primary_port(), socket_timeout=3)
            try:
                client.set("replica-set:probe", "1")
                if int(client.execute_command("WAIT", len(live) - 1, 2000)) >= len(live) - 1:  # type: ignore[no-untyped-call]
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass
            finally:
                client.close()
            time.sleep(0.1)
        raise RuntimeError("the replicas did not catch up with the primary")

    def _replicas_ok(self, sentinel: RedisServer, expected: int) -> bool:
        primary = self.primary_port()
        client = self._sentinel_client(sentinel)
        try:
            replicas: Any = client.sentinel_slaves(self.master)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        finally:
            client.close()
        healthy = [
            r
            for r in replicas
            if "down" not in str(r.get("flags", ""))
            and r.get("master-link-status") == "ok"
            and int(r.get("master-port", 0)) == primary
        ]
        return len(healthy) >= expected

    def _named_primaries(self) -> list[int]:
        ports = []
        for sentinel in self.sentinels:
            client = self._sentinel_client(sentinel)
            try:
                addr: Any = client.sentinel_get_master_addr_by_name(self.master)
                if addr:
                    ports.append(int(addr[1]))
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
        return ports

    def _stable(self) -> bool:
        live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
        ports = self._named_primaries()
        if len(ports) != len(self.sentinels) or len(set(ports)) != 1:
            return False
        primary = ports[0]
        client = redis.Redis(port=primary, socket_timeout=0.5)
        try:
            info = client.info("replication")
            if info.get("role") != "master" or info.get("connected_slaves", 0) < len(live) - 1:
                return False
            for sentinel in self.sentinels:
                s_client = self._sentinel_client(sentinel)
                try:
                    state: Any = s_client.sentinel_master(self.master)
                finally:
                    s_client.close()
                if int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
                if int(state["num-slaves"]) < len(live) - 1:
                    return False
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        finally:
            client.close()
        return True

    def _sentinel_client(self, sentinel: RedisServer) -> redis.Redis:
        return redis.Redis(
            port=sentinel.port, socket_timeout=0.5, password=self.sentinel_password or None
        )

    def stop(self) -> None:
        """Stop every process and remove their directories."""
        for server in self.sentinels + self.servers:
            server.stop()


# A replica's first sync without a disk round trip or the default 5 s wait for more replicas.
_FAST_SYNC = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
