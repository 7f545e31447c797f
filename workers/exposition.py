"""Prometheus exposition shared by every process: one registry, build info, the HTTP endpoint.

Each long-running process makes one registry with :func:`process_registry` (the standard
``process_*`` / ``python_*`` collectors and ``failover_build_info``), adds its own metrics,
and serves it with :func:`serve_settings` on ``FAILOVER_METRICS_ADDR:FAILOVER_METRICS_PORT``.
A port that is taken is a :class:`ConfigError` (one line, exit 2), not a traceback.
"""

from __future__ import annotations

import errno
import threading
from importlib import metadata
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from schemas.errors import ConfigError
from workers.settings import Settings

DISTRIBUTION = "failover-coordinator"

# A `_created` gauge beside every counter and histogram doubles the series for nothing a
# dashboard or an alert here uses (increase() copes with resets on its own).
disable_created_metrics()  # type: ignore[no-untyped-call]


def version() -> str:
    """The installed version of this project (``0+unknown`` when run from a bare checkout)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def process_registry(role: str) -> CollectorRegistry:
    """A registry with ``process_*``, ``python_*``, ``python_gc_*`` and ``failover_build_info``."""
    registry = CollectorRegistry(auto_describe=True)
    # The library's own collectors are registered on its global registry; a private
    # registry (one per process, several in a test) needs its own instances.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = Gauge(
        "failover_build_info",
        "Always 1; the labels say which version of which process role runs",
        ["version", "role"],
        registry=registry,
    )
    info.labels(version(), role).set(1)
    return registry


class MetricsServer:
    """A running HTTP exposition server; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        port: int = self._server.server_address[1]
        return port

    def close(self) -> None:
        """Stop serving and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Expose ``registry`` at ``http://addr:port/metrics`` from a daemon thread.

    A port in use (or an address this host does not have) is a :class:`ConfigError`.
    """
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        why = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ConfigError(
            f"FAILOVER_METRICS_PORT={port}: cannot serve metrics on {addr}:{port}: {why}"
            " (give each process on this host its own port)"
        ) from None
    return MetricsServer(server, thread)


def serve_settings(registry: CollectorRegistry, settings: Settings) -> MetricsServer | None:
    """Serve ``registry`` where the settings say; None when ``FAILOVER_METRICS_PORT`` is 0."""
    if not settings.metrics_port:
        return None
    return serve(registry, settings.metrics_port, settings.metrics_addr)
