"""``plantcrew run`` and the approval secret (the real CLI, as a subprocess).

Embedded (memory://, the README's main command) a run needs no ``PLANTCREW_APPROVAL_SECRET``:
the bus lives in the one process that issues and checks the tokens. On a broker bus the run's
Coordinator and plant exchange approval tokens where anyone who can publish could forge one
keyed by the development secret in plantcrew's public source, so the run refuses to start
(exit 2, one line naming the variable) until a strong secret is set; so does ``plantcrew
serve --scenario`` on a broker bus, which hosts such a run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, bus_url_for

# a class-2 stop that a person approves: a token is issued, then checked by the plant
APPROVAL = ROOT / "tests" / "distributed" / "scenarios" / "short-bearing.yaml"


def plantcrew(*args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    """The ``plantcrew`` command with ``secret`` as the approval secret (None: unset); one
    that starts serving anyway is killed after 180 s (TimeoutExpired)."""
    env = {k: v for k, v in os.environ.items() if k != "PLANTCREW_APPROVAL_SECRET"}
    if secret is not None:
        env["PLANTCREW_APPROVAL_SECRET"] = secret
    argv = [sys.executable, "-m", "plantcrew.cli", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_an_embedded_run_with_an_approval_needs_no_secret(tmp_path: Path) -> None:
    proc = plantcrew("run", str(APPROVAL), "--json", "--db", f"sqlite:///{tmp_path / 'e.db'}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"], result["expectations"]
    executed = next(e for e in result["expectations"] if e["name"] == "actions_executed")
    assert executed["passed"], executed


def test_a_run_on_nats_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'n.db'}"
    proc = plantcrew("run", str(APPROVAL), "--json", "--bus", bus_url_for("nats"), "--db", db)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PLANTCREW_APPROVAL_SECRET is not set")
    assert "openssl rand -hex 32" in lines[0], lines[0]
    assert proc.stdout == ""


def test_serve_hosting_a_run_on_redis_refuses_to_start_with_a_short_secret(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ("serve", "--scenario", str(APPROVAL), "--bus", bus_url_for("redis"), "--db", db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    proc = plantcrew(*args, "--port", port, secret="short")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PLANTCREW_APPROVAL_SECRET is "), lines
    assert "at least 32" in lines[0], lines[0]
