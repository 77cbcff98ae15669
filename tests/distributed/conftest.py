"""Crew processes for the distributed tests: real ``plantcrew`` coordinator/worker processes
on the machine's NATS or Redis (a fresh namespace) and PostgreSQL (a fresh schema).

Every process a test starts is killed when the test (or the module) ends, whatever happened;
every wait is bounded. The crew runs with a test config: heartbeats every second, a short ack
wait (so a dead worker's task comes back within seconds), few deliveries before a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from plantcrew.bus import Bus
from plantcrew.messages import AgentHeartbeat, Message, Subjects
from plantcrew.plant.bus_actuator import COMMANDS
from tests.conftest import ROOT, bus_url_for, pg_url_for

START_TIMEOUT_S = 300.0  # a process imports litellm and scikit-learn: slow on a busy machine
TEST_APPROVAL_SECRET = "tests-distributed-" + "5f0c9e2a41d7b836" * 3
"""The approval secret of every crew process the tests start on a broker bus (they refuse to
start without one), and of the test process, whose runner checks the tokens the Coordinator
process issued."""


@pytest.fixture(autouse=True)
def approval_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """This process's approval secret: the crew processes' own (see TEST_APPROVAL_SECRET)."""
    monkeypatch.setenv("PLANTCREW_APPROVAL_SECRET", TEST_APPROVAL_SECRET)
    return TEST_APPROVAL_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CrewProcess:
    """One ``plantcrew`` process (``python -m plantcrew.cli_processes ARGS``) with probes on a
    free port and its log in ``log``."""

    args: list[str]
    log: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CrewProcess:
        argv = [sys.executable, "-m", "plantcrew.cli_processes", *self.args]
        argv += ["--probe-port", str(self.port), "--probe-host", "127.0.0.1"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.args} not ready in {timeout:g} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code of a graceful stop (else None)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
                return None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)


def make_test_config(dest: Path) -> Path:
    """``config/`` with crew.yaml tuned for tests: fast heartbeats, short ack wait."""
    shutil.copytree(ROOT / "config", dest)
    crew_file = dest / "crew.yaml"
    crew = yaml.safe_load(crew_file.read_text())
    crew["heartbeat_interval_s"] = 1
    crew["coordinator"]["agent_ttl_s"] = 6
    crew["delivery"] = {"max_deliver": 3, "ack_wait_s": 8, "backoff_s": [0.05, 0.2, 0.5]}
    crew_file.write_text(yaml.safe_dump(crew))
    return dest


@pytest.fixture(scope="session")
def crew_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_config(tmp_path_factory.mktemp("cfg") / "config")


SHORT_ACK_WAIT_S = 5
"""The ack wait of :func:`short_ack_config` (the server's: 6 s)."""


@pytest.fixture
def short_ack_config(crew_config: Path, tmp_path: Path) -> Path:
    """The test config with an ack wait of :data:`SHORT_ACK_WAIT_S`."""
    dest = tmp_path / "config"
    shutil.copytree(crew_config, dest)
    crew = yaml.safe_load((dest / "crew.yaml").read_text())
    crew["delivery"]["ack_wait_s"] = SHORT_ACK_WAIT_S
    (dest / "crew.yaml").write_text(yaml.safe_dump(crew))
    return dest


@pytest.fixture
def cut_off(
    short_ack_config: Path, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """``cut_off(bus_url, server_url, label=..., query=...)``:
    :func:`tests.distributed.cut_off.cut_off_operator` with this test's config (the short ack
    wait), database, ``tmp_path`` and ``monkeypatch``."""
    from tests.distributed.cut_off import cut_off_operator  # it imports this module

    return functools.partial(
        cut_off_operator, config_dir=short_ack_config, pg_database=pg_database,
        tmp_path=tmp_path, monkeypatch=monkeypatch,
    )  # fmt: skip


async def watch_commands_and_heartbeats(
    bus: Bus,
) -> tuple[list[Message], list[tuple[float, AgentHeartbeat]]]:
    """Subscribe ``bus`` (the test's own) to every plant command (``plant.commands.>``) and
    every heartbeat on ``crew.control``; returns the lists they are appended to as they come:
    the commands, and each heartbeat with the event loop's time of its arrival."""
    loop = asyncio.get_running_loop()
    commands: list[Message] = []
    heartbeats: list[tuple[float, AgentHeartbeat]] = []

    async def on_command(msg: Message) -> None:
        commands.append(msg)

    async def on_control(msg: Message) -> None:
        if isinstance(msg.payload, AgentHeartbeat):
            heartbeats.append((loop.time(), msg.payload))

    await bus.subscribe(f"{COMMANDS}.>", on_command)
    await bus.subscribe(Subjects.CONTROL, on_control)
    return commands, heartbeats


async def until(what: str, check: Any, timeout: float = 60.0) -> Any:
    """Poll ``check`` (run in a thread: it may query the database or read a log) until it
    answers truthy, and return that; AssertionError naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (found := await asyncio.to_thread(check)):
        assert loop.time() < end, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.2)
    return found


def new_schema(database_url: str) -> str:
    """A fresh schema in ``database_url``'s database; returns a URL searching only it."""
    schema = f"d{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return pg_url_for(database_url.rsplit("/", 1)[1], schema=schema)


@dataclass
class Crew:
    """A crew of processes on one bus and database (see module doc)."""

    bus_url: str
    db_url: str
    config_dir: Path
    logs: Path
    processes: list[CrewProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PLANTCREW_APPROVAL_SECRET=TEST_APPROVAL_SECRET,
            PLANTCREW_CONFIG_DIR=str(self.config_dir),
            PLANTCREW_LOG_LEVEL="INFO",
            PLANTCREW_LOG_JSON="false",
        )
        return env

    def spawn(self, *args: str, bus_url: str | None = None) -> CrewProcess:
        """Start ``plantcrew ARGS`` on the crew's bus (or ``bus_url``: the same broker reached
        another way, e.g. through a forwarder) and database."""
        n = len(self.processes)
        proc = CrewProcess(
            [*args, "--bus", bus_url or self.bus_url, "--db", self.db_url],
            self.logs / f"{n}-{args[0]}.log",
            self.env(),
        )
        self.processes.append(proc.start())
        return proc

    def wait_ready(self) -> None:
        for proc in self.processes:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.wait_ready()

    def by_pid(self, pid: int) -> CrewProcess:
        return next(p for p in self.processes if p.pid == pid)

    def stop(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.stop(timeout=20)
        for proc in self.processes:
            proc.kill()


@contextlib.contextmanager
def crew_of(
    bus_url: str, db_url: str, config_dir: Path, logs: Path, *spawn: tuple[str, ...]
) -> Iterator[Crew]:
    """Start processes (each ``spawn`` entry is one argument list) and stop them afterwards."""
    logs.mkdir(parents=True, exist_ok=True)
    crew = Crew(bus_url, db_url, config_dir, logs)
    try:
        for args in spawn:
            crew.spawn(*args)
        crew.wait_ready()
        yield crew
    finally:
        crew.stop()


OPERATOR = ("worker", "--role", "operator", "--grace", "2")
SHARED_CREW = (
    ("up", "--role", "monitor", "--role", "diagnostic", "--role", "safety", "--role", "reviewer"),
    OPERATOR,
    OPERATOR,
    OPERATOR,
)
"""The Coordinator and four roles in one process, and three Operator workers of their own
(the SIGTERM and SIGKILL tests each take one away)."""


FULL = bool(os.environ.get("PLANTCREW_TEST_FULL"))
"""``PLANTCREW_TEST_FULL=1``: every scenario and every fault test on both brokers."""

FAULT_BROKERS = ["nats", "redis"] if FULL else ["nats"]
"""Brokers the worker-fault tests run on (CI: NATS; both with ``PLANTCREW_TEST_FULL=1``)."""


@pytest.fixture(scope="module")
def shared_crew(
    request: pytest.FixtureRequest,
    crew_config: Path,
    pg_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Crew]:
    """A crew of processes on the broker ``request.param`` (``nats``/``redis``; indirect
    parametrization), shared by a module's tests: :data:`SHARED_CREW` where the worker-fault
    tests run, else one ``plantcrew up``."""
    broker: str = request.param
    spawn = SHARED_CREW if broker in FAULT_BROKERS else (("up",),)
    logs = tmp_path_factory.mktemp(f"crew-{broker}")
    with crew_of(bus_url_for(broker), new_schema(pg_database), crew_config, logs, *spawn) as crew:
        yield crew
