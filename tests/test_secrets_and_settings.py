"""Issue 9, findings 9-12: secrets never leave a process, TLS verifies, every bad setting or
refusal by Redis is one line (never a traceback), the metrics address is configurable.

Every process here is real (``sys.executable -m ...``) against a real ``redis-server``; the
TLS server and its CA, server and client certificates are made by the fixture (openssl).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schemas.codec import decode_entry
from streams.connection import connect
from streams.keys import Keys
from streams.server import RedisServer, free_port
from tests.waiting import wait_for_sync
from tests.worker_process import ROOT, WorkerProcess
from workers.probe.prober import Prober
from workers.settings import load_settings

SECRET = "hunter2-s3cr3t"
BASE = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "PYTHONPATH": str(ROOT),
    "FAILOVER_REGIONS": "eu,us,ap",
    "FAILOVER_LEASE_TTL_MS": "1000",
}


def _run(module: str, env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str]:
    """Run a process to its end; its exit code and everything it printed."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**BASE, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    errors = [line for line in lines if not line[:4].isdigit()]  # not a log record
    assert len(errors) == 1, output
    return errors[0]


# -- finding 9: passwords in probe targets ---------------------------------------------


class _BasicAuthServer:
    """An HTTP server that answers 200 only to the right Basic credentials."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        auth = [h.split(":", 1)[1].strip() for h in head.split("\r\n") if ":" in h]
        good = "Basic " + base64.b64encode(f"admin:{SECRET}".encode()).decode()
        self.seen.extend(auth)
        code = b"200 OK" if good in auth else b"401 Unauthorized"
        writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_finding_9_probe_target_passwords_are_used_and_never_shown(
    redis_server: RedisServer, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = _BasicAuthServer()
    server = await asyncio.start_server(auth.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = f"eu=http://admin:{SECRET}@127.0.0.1:{port}/health"
    env = {
        **BASE,
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_PROBE_TARGETS": target,
        "FAILOVER_INSTANCE_ID": "p1",
    }
    client = connect(redis_server.url)
    try:
        async with server:
            prober = Prober(client, load_settings(env, role="prober"))
            (result,) = await prober.round()
            assert result.status == "healthy", result  # the credentials were sent
            # The operator's one-shot check, as a real process.
            check = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers.ops.cli",
                "check",
                "--json",
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await check.communicate()
        assert check.returncode == 0, out
        assert json.loads(out)["results"][0]["url"].startswith("http://admin:***@")
        shown = [out.decode()]
        for _, fields in await client.xrange(keys.health):
            event = decode_entry(fields, stream="health")
            shown.append(fields[b"data"].decode())
            assert getattr(event, "detail", "").startswith("http://admin:***@")
        shown.append(str(await client.get(keys.region_health("eu"))))
        shown.append(capsys.readouterr().err)
        assert all(SECRET not in text for text in shown), shown
        assert auth.seen  # and the server did get them
    finally:
        await client.aclose()


# -- finding 10: TLS ---------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(cwd: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip


def _make_cert(cwd: Path, name: str, ca: str) -> None:
    (cwd / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "ext.cnf",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a TLS port that requires client certificates, its files in a dir."""
    for ca in ("ca", "other-ca"):
        _make_ca(tmp_path, ca)
    _make_cert(tmp_path, "server", "ca")
    _make_cert(tmp_path, "client", "ca")
    tls_port = free_port()
    server = RedisServer(
        extra_args=[
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(tmp_path / "server.crt"),
            "--tls-key-file", str(tmp_path / "server.key"),
            "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
            "--tls-auth-clients", "yes",
        ]
    )  # fmt: skip
    server.start()
    try:
        yield server, tls_port, tmp_path
    finally:
        server.stop()


def test_finding_10_tls_verifies_and_a_wrong_ca_is_one_line_and_exit_1(
    tls_redis: tuple[RedisServer, int, Path], workers: list[WorkerProcess]
) -> None:
    server, tls_port, certs = tls_redis
    plain = redis.Redis.from_url(server.url)
    keys = Keys("{tls}")
    env = {
        **BASE,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_REDIS_URL": f"rediss://127.0.0.1:{tls_port}/0",
        "FAILOVER_REDIS_TLS_CA": str(certs / "ca.crt"),
        "FAILOVER_REDIS_TLS_CERT": str(certs / "client.crt"),
        "FAILOVER_REDIS_TLS_KEY": str(certs / "client.key"),
        "FAILOVER_INSTANCE_ID": "tls-coordinator",
    }
    try:
        leader = WorkerProcess("workers.coordinator", env, "tls-coordinator").start()
        workers.append(leader)
        wait_for_sync(lambda: plain.exists(keys.leader) == 1, 20, "a leader over TLS")
        # The same through the URL parameters instead of the settings.
        code, out = _run(
            "workers.ops.cli",
            {
                **env,
                "FAILOVER_REDIS_TLS_CA": "",
                "FAILOVER_REDIS_TLS_CERT": "",
                "FAILOVER_REDIS_TLS_KEY": "",
                "FAILOVER_REDIS_URL": f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs="
                f"{certs / 'ca.crt'}&ssl_certfile={certs / 'client.crt'}"
                f"&ssl_keyfile={certs / 'client.key'}",
            },
            "status",
            "--json",
        )
        assert code == 0, out
        assert json.loads(out)["leader"]["owner"].startswith("tls-coordinator#")
    finally:
        plain.close()
    # A CA that did not sign the server's certificate: one line, exit 1, no endless retry.
    wrong = {**env, "FAILOVER_REDIS_TLS_CA": str(certs / "other-ca.crt")}
    code, out = _run("workers.coordinator", wrong, timeout=20)
    assert code == 1, out
    assert "certificate verify failed" in _one_line(out)
    # Turning verification off is refused up front.
    off = {**env, "FAILOVER_REDIS_URL": f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"}
    code, out = _run("workers.coordinator", off)
    assert code == 2, out
    assert "ssl_cert_reqs=none" in _one_line(out)


# -- finding 11: one line, never a traceback ----------------------------------------------


def test_finding_11_redis_refusals_are_one_line_and_exit_1(
    own_redis_server: RedisServer,
) -> None:
    admin = redis.Redis.from_url(own_redis_server.url)
    try:
        admin.acl_setuser("alice", enabled=True, passwords=[f"+{SECRET}"], commands=["+@all"],
                          keys=["*"], channels=[])  # fmt: skip
        host = f"127.0.0.1:{own_redis_server.port}"
        cases = {
            "wrong password": f"redis://alice:wrong-{SECRET}@{host}/0",
            "database 99": f"redis://{host}/99",
            "no grant on the release channel": f"redis://alice:{SECRET}@{host}/0",
        }
        for what, url in cases.items():
            code, out = _run(
                "workers.coordinator", {"FAILOVER_REDIS_URL": url}, timeout=60
            )  # a loaded CI machine: the bound is for a hang
            assert code == 1, (what, out)
            line = _one_line(out)
            assert "refused" in line, (what, line)
            assert SECRET not in out, (what, out)
    finally:
        admin.acl_deluser("alice")
        admin.close()


@pytest.mark.chaos
def test_finding_11_a_channel_grant_revoked_while_leading_ends_the_process_in_one_line(
    own_redis_server: RedisServer,
) -> None:
    # The same refusal as above, met late: the coordinator already leads when its user loses
    # the release channel (Redis drops the subscription, the listener's new one is refused).
    # It must step down and exit 1 in one line, not lead on without hearing releases.
    admin = redis.Redis.from_url(own_redis_server.url)
    try:
        admin.acl_setuser("carol", enabled=True, passwords=[f"+{SECRET}"], commands=["+@all"],
                          keys=["*"], channels=["*"])  # fmt: skip
        url = f"redis://carol:{SECRET}@127.0.0.1:{own_redis_server.port}/0"
        proc = WorkerProcess("workers.coordinator", {**BASE, "FAILOVER_REDIS_URL": url}, "carol")
        proc.start()
        try:
            wait_for_sync(lambda: admin.get(Keys("failover").leader) is not None, 20, "a leader")
            admin.acl_setuser("carol", enabled=True, reset_channels=True)
            code = proc.wait(30)
        finally:
            proc.kill()
        out = proc.output()
        assert code == 1, out
        line = _one_line(out)
        assert "refused" in line and "channel" in line, line
        assert SECRET not in out
    finally:
        admin.acl_deluser("carol")
        admin.close()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FAILOVER_REDIS_URL": "redis://127.0.0.1:1/0?foo=bar"}, "unknown parameter 'foo'"),
        ({"FAILOVER_THRESHOLD": "1e23"}, "FAILOVER_THRESHOLD"),
        ({"FAILOVER_THRESHOLD": "99999999999999999999999"}, "<= 1000"),
        ({"FAILOVER_METRICS_ADDR": "everywhere"}, "FAILOVER_METRICS_ADDR"),
    ],
    ids=["url parameter", "float", "huge", "metrics addr"],
)
def test_finding_11_bad_settings_are_one_line_and_exit_2(env: dict[str, str], words: str) -> None:
    code, out = _run("workers.coordinator", {"FAILOVER_REDIS_URL": "redis://127.0.0.1:1/0", **env})
    assert code == 2, out
    assert words in _one_line(out)


@pytest.mark.parametrize(
    "target",
    ["eu=tcp://host", "eu=http://", "eu=http://host:notaport/x", "eu=:notaport"],
)
def test_finding_11_malformed_probe_targets_are_refused_at_load(target: str) -> None:
    code, out = _run(
        "workers.health",
        {"FAILOVER_REDIS_URL": "redis://127.0.0.1:1/0", "FAILOVER_PROBE_TARGETS": target},
    )
    assert code == 2, out
    assert "FAILOVER_PROBE_TARGETS" in _one_line(out)


def test_finding_11_a_metrics_port_in_use_is_one_line_and_exit_2(redis_server: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the coordinator binds 0.0.0.0 by default
        taken.listen()
        port = taken.getsockname()[1]
        env = {"FAILOVER_REDIS_URL": redis_server.url, "FAILOVER_METRICS_PORT": str(port)}
        code, out = _run("workers.coordinator", env)
    assert code == 2, out
    assert "cannot serve metrics" in _one_line(out)


# -- finding 12: the metrics address ------------------------------------------------------


def _listening_on(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp shows them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_finding_12_metrics_addr_binds_where_told(
    redis_server: RedisServer, namespace: str, workers: list[WorkerProcess]
) -> None:
    port = free_port()
    env = {
        **BASE,
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_METRICS_PORT": str(port),
        "FAILOVER_METRICS_ADDR": "127.0.0.1",
    }
    workers.append(WorkerProcess("workers.coordinator", env, "metrics-addr").start())
    wait_for_sync(lambda: bool(_listening_on(port)), 20, "the metrics endpoint")
    assert _listening_on(port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0
