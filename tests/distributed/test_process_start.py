"""A crew process that cannot start says why in one line and exits 3 (cli_processes' contract):
here its probe port is taken. uvicorn ends its own start-up with ``sys.exit(3)``, which used
to escape as a traceback ("Task exception was never retrieved", then SystemExit) with the code
3 only by uvicorn's coincidence.

A crew process on a broker bus without a strong ``PLANTCREW_APPROVAL_SECRET`` refuses to
start (exit 2, one line naming the variable, why, and how to make one): it used to fall back
to the development secret in plantcrew's public source, so anyone who could publish on the bus
could forge an approval token; on memory:// (one process) it still starts without one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, bus_url_for
from tests.distributed.conftest import TEST_APPROVAL_SECRET, CrewProcess, new_schema


def test_a_taken_probe_port_is_one_error_line_and_exit_3(
    crew_config: Path, pg_database: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PLANTCREW_CONFIG_DIR": str(crew_config), "PLANTCREW_LOG_JSON": "false"}
    env["PLANTCREW_APPROVAL_SECRET"] = TEST_APPROVAL_SECRET
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        args = ["worker", "--role", "reviewer", "--bus", bus_url_for("nats")]
        proc = CrewProcess([*args, "--db", new_schema(pg_database)], tmp_path / "w.log", env, port)
        proc.start()
        try:
            assert proc.proc is not None
            code = proc.proc.wait(180)
        finally:
            proc.kill()
    log = proc.tail(200)
    assert code == 3, log
    assert "Traceback" not in log and "never retrieved" not in log, log
    assert "error:" in log and f"127.0.0.1:{port}" in log, log


def start_without_secret(
    args: list[str], tmp_path: Path, secret: str | None
) -> subprocess.CompletedProcess[str]:
    """Run ``plantcrew ARGS`` (the real CLI) with ``secret`` as the approval secret (None:
    unset) until it exits; a process that starts anyway is killed after 120 s (TimeoutExpired)."""
    env = {k: v for k, v in os.environ.items() if k != "PLANTCREW_APPROVAL_SECRET"}
    if secret is not None:
        env["PLANTCREW_APPROVAL_SECRET"] = secret
    argv = [sys.executable, "-m", "plantcrew.cli", *args]
    argv += ["--db", f"sqlite:///{tmp_path / 'crew.db'}", "--probe-port", "0"]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [["coordinator"], ["worker", "--role", "operator"], ["worker", "--role", "diagnostic"], ["up"]],
    ids=lambda a: "-".join(a),
)
def test_a_crew_process_on_nats_refuses_to_start_without_an_approval_secret(
    args: list[str], tmp_path: Path
) -> None:
    proc = start_without_secret([*args, "--bus", bus_url_for("nats")], tmp_path, None)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PLANTCREW_APPROVAL_SECRET is not set")
    assert "forge" in lines[0] and "openssl rand -hex 32" in lines[0], lines[0]


@pytest.mark.parametrize(
    "secret",
    ["plantcrew-dev-secret-change-me", "CHANGE-ME-64-hex-characters", "x" * 40, "too-short"],
    ids=["dev-secret", "k8s-example", "one-character", "short"],
)
def test_a_weak_approval_secret_is_refused_too(secret: str, tmp_path: Path) -> None:
    proc = start_without_secret(["coordinator", "--bus", bus_url_for("redis")], tmp_path, secret)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PLANTCREW_APPROVAL_SECRET is "), lines
    assert "openssl rand -hex 32" in lines[0] and secret not in lines[0], lines[0]


def test_up_on_memory_starts_without_an_approval_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PLANTCREW_APPROVAL_SECRET"}
    args = ["up", "--bus", "memory://", "--db", f"sqlite:///{tmp_path / 'up.db'}"]
    proc = CrewProcess(args, tmp_path / "up.log", env).start()
    try:
        proc.wait_ready()
        proc.signal(signal.SIGTERM)
        assert proc.stop() == 0, proc.tail()
    finally:
        proc.kill()
