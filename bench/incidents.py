"""Incident benchmark (not a test): incidents per second, and the latency from detection to
resolution, of the whole crew on the playbook model.

Each incident is a fresh run with the default plant: the driver publishes ``anomaly.detected``
(an inlet valve closing on pump1: flow, pressure, current and motor temperature down), and the
crew answers it end to end: the Coordinator opens the incident and routes diagnose →
propose_action → assess_safety (a class-1 ``set_position`` on the inlet valve: approved by
policy) → actuate (the command reaches the driver's plant gateway over the bus) → verifying;
the driver then reports ``anomaly.cleared`` (the plant is back to normal), the incident is
resolved, reviewed and closed. Latency is wall time from publishing the detection to seeing the
incident closed as ``resolved`` on ``crew.incidents``; throughput is incidents closed per
second of wall time with ``--inflight`` incidents open at once. Every message is persisted: the
database keeps the conversation, the outbox, tasks, actions, audit; on ``nats://`` every event
and task is stored by JetStream (file storage) before it is acknowledged; on ``redis://`` in
Redis Streams.

Crews: on ``memory://`` the Coordinator host and the workers run in this process; on a broker
they are processes (``plantcrew coordinator`` and ``--workers`` × ``plantcrew worker`` with
the four task roles), as in production. ``--workers 1,2`` compares one and two workers per role.

Run:  /work/venv/bin/python bench/incidents.py [--n 300] [--inflight 32] [--workers 1,2]
      [--backends memory,nats,redis] [--db postgresql://postgres@127.0.0.1:5432/test | sqlite]
      [--model-latency-ms L]
It prints its figures and the exact command that produced them, and the CPU time each part
used per measured incident (from ``/proc``: this process, the Coordinator and worker
processes, and every ``postgres``, ``nats-server`` and ``redis-server`` process on the machine,
so other work on the same servers counts too): on a busy machine throughput is noisy, CPU per
incident much less so; on PostgreSQL it also prints the database transactions committed per
incident by every process (``pg_stat_database``), which load does not change. Knobs for
looking into where the time goes (environment): ``BENCH_AGENTS_PER_WORKER=N``
(``--concurrency`` of each worker process), ``BENCH_COORDINATORS_SCALE=1`` (as many
Coordinator processes as workers per role), ``BENCH_COORDINATOR_CONSUMERS=N`` (the
Coordinator's ``--concurrency``: ``crew.events`` consumers, default 32),
``BENCH_GROUP_COMMIT=N`` (crew.yaml's ``coordinator.group_commit``; 1 turns group commit
off), ``BENCH_ASYNC_COMMIT=1`` (PostgreSQL ``synchronous_commit=off`` for the benchmark's
database: shows what the write-ahead log's fsync costs; never a production setting).

The model: by default the offline playbook model, which answers at once, so the crew is
CPU-bound and on a small machine a second worker per role adds nothing. Hosted models take
hundreds of milliseconds of wall time per call; then the worker tier's concurrency (the
agents answering model calls at once) is the limit, and that regime is where more worker
processes add throughput. ``--model-latency-ms L`` (L > 0) measures it with the real
protocol: this process serves the OpenAI chat-completions API on loopback
(``tests/llm/openai_stub.py``) and answers each request with the playbook's own answer
after L ms, and the crew runs on a copy of the configuration whose models.yaml puts an
``openai/bench-stub`` deployment at that server ahead of the playbook in every group (hosted
deployments left out; the key variable ``BENCH_MODEL_KEY`` is set to a dummy). So the
incidents take the same steps as on the playbook, but every model call goes through
litellm's Router over HTTP and takes L ms. The bench counts the requests the server
received and every model call the crew recorded, prints model calls per incident, and fails
when a call was served by anything but the stub (a fallback to the playbook). Each worker
process runs ``BENCH_AGENTS_PER_WORKER`` agents per role (default 1); a role's agents bound how
many of its model calls are in flight, and ``--workers N`` multiplies that bound by N. The
driver's CPU then includes the stub's (on ``memory://`` the stub, like the crew, runs in this
process, and ``--workers N`` is N agents per role).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse, urlunparse

import nats_count  # bench/, next to this script

from plantcrew.agents import Policies
from plantcrew.bus import Bus, connect
from plantcrew.crews.config import EVENT_CONSUMERS, CrewConfig
from plantcrew.crews.host import CLOCK, CoordinatorHost
from plantcrew.crews.worker import WorkerHost
from plantcrew.detect import load_signatures
from plantcrew.llm.config import load_models_config
from plantcrew.messages import (
    AgentHeartbeat,
    AnomalyCleared,
    AnomalyDetected,
    Capability,
    Deviation,
    IncidentUpdated,
    Message,
    Subjects,
)
from plantcrew.plant.actuators import ActuatorCommand, ActuatorReceipt
from plantcrew.plant.bus_actuator import COMMANDS, PlantGateway
from plantcrew.plant.spec import default_plant
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import MessageRecord, ModelCall, Run, Store

ROOT = Path(__file__).resolve().parent.parent
TASK_ROLES = ("diagnostic", "operator", "safety", "reviewer")
NEEDED = {Capability.DIAGNOSE, Capability.PROPOSE_ACTION, Capability.ASSESS_SAFETY}
NEEDED |= {Capability.ACTUATE, Capability.REVIEW}
# events applied at once by the Coordinator (its database threads)
COORDINATOR_CONSUMERS = int(os.environ.get("BENCH_COORDINATOR_CONSUMERS", EVENT_CONSUMERS))
AGENTS_PER_WORKER = int(os.environ.get("BENCH_AGENTS_PER_WORKER", "1"))
COORDINATORS_SCALE = bool(os.environ.get("BENCH_COORDINATORS_SCALE"))
GROUP_COMMIT = os.environ.get("BENCH_GROUP_COMMIT")  # crew.yaml's coordinator.group_commit


STUB_MODEL = "bench-stub"  # the model name the crew asks the loopback OpenAI server for
STUB_KEY_ENV = "BENCH_MODEL_KEY"  # the deployment's api_key_env (a dummy value)


def config_dir(model_base: str | None = None) -> Path:
    """The crew's configuration: the shipped one, or a copy (in a new temporary directory)
    with ``BENCH_GROUP_COMMIT`` and, given ``model_base`` (an OpenAI-compatible ``.../v1``
    URL), every model group served by ``openai/bench-stub`` there first, then by its playbook
    deployment (hosted deployments left out). Raises RuntimeError when the copy's models.yaml
    would not put the stub first in every group."""
    if not GROUP_COMMIT and model_base is None:
        return DEFAULT_CONFIG_DIR
    import shutil

    import yaml

    from plantcrew.llm.config import load_models_config

    out = Path(tempfile.mkdtemp(prefix="bench-config-")) / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, out)
    if GROUP_COMMIT:
        crew = yaml.safe_load((out / "crew.yaml").read_text())
        crew.setdefault("coordinator", {})["group_commit"] = int(GROUP_COMMIT)
        (out / "crew.yaml").write_text(yaml.safe_dump(crew))
    if model_base is not None:
        models = yaml.safe_load((out / "models.yaml").read_text())
        for name, group in models["groups"].items():
            stub = {
                "model": f"openai/{STUB_MODEL}", "name": f"{name}-{STUB_MODEL}",
                "api_base": model_base, "api_key_env": STUB_KEY_ENV, "timeout_s": 30,
                "max_retries": 0,
            }  # fmt: skip
            playbooks = [d for d in group["deployments"] if d["model"].startswith("playbook/")]
            group["deployments"] = [stub, *playbooks]
        (out / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
        os.environ[STUB_KEY_ENV] = "bench-dummy-key"  # the workers inherit it
        cfg = load_models_config(out / "models.yaml")
        for name in cfg.groups:
            first = cfg.active(name)[0]
            if first.name != f"{name}-{STUB_MODEL}":
                raise RuntimeError(f"models.yaml copy: group {name} starts with {first.name}")
    return out


BROKERS = {"nats": "nats://127.0.0.1:4222", "redis": "redis://127.0.0.1:6379"}
DEVIATIONS = [
    Deviation(sensor="flow_rate", value=21.0, baseline=32.0, z=-9.0, direction="down"),
    Deviation(sensor="pressure", value=2.1, baseline=2.6, z=-4.5, direction="down"),
    Deviation(sensor="current", value=8.1, baseline=9.0, z=-3.6, direction="down"),
    Deviation(sensor="motor_temperature", value=61.0, baseline=64.0, z=-5.5, direction="down"),
]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the model: the playbook's answers over OpenAI's HTTP API, after a delay -------------
@contextlib.contextmanager
def model_server(latency_ms: float) -> Iterator[Any]:
    """A loopback OpenAI chat-completions server (``tests/llm/openai_stub.py``'s
    ``OpenAIStub``, yielded) answering ``bench-stub`` with the playbook's answer to each
    request (fitted to its ``response_format``), ``latency_ms`` after it arrived. A request
    the playbook cannot answer gets the playbook's error status (the crew then falls back,
    which the bench reports as a failure)."""
    sys.path.insert(0, str(ROOT))  # tests/ is not installed
    from litellm.llms.custom_llm import CustomLLMError

    from plantcrew.llm.playbook import PlaybookLLM, estimate_tokens
    from tests.llm.openai_stub import OpenAIStub, Reply

    playbook = PlaybookLLM()
    rules = str(DEFAULT_CONFIG_DIR / "playbooks.yaml")
    delay = latency_ms / 1000

    def answer(body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        try:
            params = {"response_format": body.get("response_format")}
            text = playbook.answer_text(messages, params, rules)
        except CustomLLMError as exc:
            return Reply.error(exc.status_code, message=str(exc), delay_s=delay)
        prompt = estimate_tokens(json.dumps(messages, default=str))
        return Reply.text(
            text, delay_s=delay, prompt_tokens=prompt, completion_tokens=estimate_tokens(text)
        )

    with OpenAIStub() as stub:
        stub.respond(STUB_MODEL, answer)
        yield stub


def model_calls(store: Store, runs: list[str]) -> dict[tuple[str, bool, bool], int]:
    """The model calls the crew recorded for ``runs``: count by (deployment, fallback, ok)."""
    from sqlmodel import col, func, select

    with store.tx() as s:
        rows = s.exec(
            select(ModelCall.deployment, ModelCall.fallback, ModelCall.ok, func.count())
            .where(col(ModelCall.run_id).in_(runs))
            .group_by(col(ModelCall.deployment), col(ModelCall.fallback), col(ModelCall.ok))
        ).all()
    return {(d, bool(f), bool(ok)): int(n) for d, f, ok, n in rows}


def check_model_calls(
    calls: dict[tuple[str, bool, bool], int], requests: int | None, n: int
) -> None:
    """With the model server (``requests``: how many it received while measuring), raise
    RuntimeError unless it received some and every recorded call was served by it, on the
    first try, successfully."""
    if requests is None:
        return
    wrong = {k: v for k, v in calls.items() if not k[0].endswith(STUB_MODEL) or k[1] or not k[2]}
    if not requests or not calls or wrong:
        raise RuntimeError(
            f"--model-latency-ms: the model server received {requests} requests for {n} "
            f"incidents and the crew recorded {sum(calls.values())} model calls; not served "
            f"by {STUB_MODEL} (deployment, fallback, ok: count): {wrong}"
        )


# ---- where the CPU goes ------------------------------------------------------------------
SERVERS = ("postgres", "nats-server", "redis-server")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


OWN_SERVERS: dict[str, list[int]] = {}
"""Servers the bench started for itself (``--own-nats``): counted instead of every process
of that name on the machine."""


def _servers() -> dict[str, list[int]]:
    """Pids of the database and broker servers on this machine, by name."""
    out: dict[str, list[int]] = {name: [] for name in SERVERS}
    for name, pids in OWN_SERVERS.items():
        out[name] = list(pids)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm in out and comm not in OWN_SERVERS:
                out[comm].append(int(entry))
    return out


def db_transactions(db_url: str) -> int | None:
    """Transactions committed so far in ``db_url``'s PostgreSQL database by every process
    (``pg_stat_database.xact_commit``; None on SQLite). PostgreSQL publishes a backend's
    counts within about a second of its last transaction, so read it after a pause."""
    if not db_url.startswith("postgresql"):
        return None
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else None


def cpu_snapshot(parts: dict[str, list[int]]) -> dict[int, float]:
    """CPU seconds used so far by each pid of every part."""
    return {pid: _cpu_s(pid) for pids in parts.values() for pid in pids}


def cpu_used(parts: dict[str, list[int]], before: dict[int, float]) -> dict[str, float]:
    """CPU seconds each part used since ``before`` (a server process that started since
    counts from zero; one that ended is left out)."""
    now = {**_servers(), **{k: v for k, v in parts.items() if k not in SERVERS}}
    return {
        name: sum(max(0.0, _cpu_s(p) - before.get(p, 0.0)) for p in pids)
        for name, pids in now.items()
    }


IDLE_S = 10.0  # seconds of the crew idle, with --count-nats


async def idle_traffic(count_dir: str, parts: dict[str, list[int]]) -> dict[str, float]:
    """What the crew asks of nats-server per second while no incident is open: messages
    per second of each class (``nats_count``), over ``IDLE_S`` seconds, and the CPU
    milliseconds per second the nats-server processes used meanwhile (``nats-server_ms``);
    with ``--own-nats``, the server's counters too (``server.*``, see ``server_counts``)."""
    before, cpu = nats_count.read(count_dir), cpu_snapshot(parts)
    before.update({f"server.{k}": v for k, v in server_counts().items()})
    await asyncio.sleep(IDLE_S)
    after = nats_count.read(count_dir)
    after.update({f"server.{k}": v for k, v in server_counts().items()})
    after.subtract(before)
    rates = {k: v / IDLE_S for k, v in sorted(after.items()) if v}
    rates["nats-server_ms"] = 1000 * cpu_used(parts, cpu)["nats-server"] / IDLE_S
    return rates


@contextlib.contextmanager
def own_nats_server() -> Iterator[str]:
    """A nats-server of this bench's own (``--own-nats``), started as the machine's is (JetStream,
    file storage in a fresh directory on the same disk) on a free port, with monitoring on
    another: nothing else uses it, so its CPU and counters are the bench's alone. Yields its
    URL; its pid is in ``OWN_SERVERS`` meanwhile."""
    port, monitor = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nats-", dir="/var/tmp") as store:
        argv = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
        proc = subprocess.Popen([*argv, "-m", str(monitor)], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("nats-server did not start") from None
                    time.sleep(0.1)
            OWN_SERVERS["nats-server"] = [proc.pid]
            NATS_MONITOR.append(f"http://127.0.0.1:{monitor}")
            yield f"nats://127.0.0.1:{port}"
        finally:
            OWN_SERVERS.pop("nats-server", None)
            NATS_MONITOR.clear()
            proc.terminate()
            proc.wait(10)


NATS_MONITOR: list[str] = []  # the --own-nats server's monitoring URL


def server_counts() -> dict[str, int]:
    """The ``--own-nats`` server's own counters: messages in and out (every client's,
    ``/varz``) and JetStream API requests (``/jsz``: consumer info, stream and consumer
    management; not pulls, acks or stored publishes). Empty without ``--own-nats``."""
    if not NATS_MONITOR:
        return {}
    with urllib.request.urlopen(f"{NATS_MONITOR[0]}/varz", timeout=5) as r:
        varz = json.load(r)
    with urllib.request.urlopen(f"{NATS_MONITOR[0]}/jsz", timeout=5) as r:
        jsz = json.load(r)
    return {
        "in_msgs": int(varz["in_msgs"]),
        "out_msgs": int(varz["out_msgs"]),
        "js_api": int(jsz.get("api", {}).get("total", 0)),
    }


# ---- databases ----------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_database(db: str) -> Iterator[str]:
    """A fresh database: a new PostgreSQL database next to ``db``, or a SQLite file."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    import psycopg

    name = f"plantcrew_bench_{uuid.uuid4().hex[:10]}"
    admin = urlunparse(urlparse(db)._replace(query=""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        if os.environ.get("BENCH_ASYNC_COMMIT"):  # to see what fsync costs; never in production
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        yield urlunparse(urlparse(admin)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drop_namespace(url: str) -> None:
    parts = urlparse(url)
    ns = parts.query.split("namespace=")[-1]
    server = urlunparse(parts._replace(query=""))
    if parts.scheme == "nats":
        import nats

        nc = await nats.connect(server)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(f"PLANTCREW_{ns}")
        await nc.close()
    elif parts.scheme == "redis":
        from redis.asyncio import Redis

        r = Redis.from_url(server)
        keys = [k async for k in r.scan_iter(match=f"{ns}.*", count=1000)]
        for i in range(0, len(keys), 500):
            await r.unlink(*keys[i : i + 500])
        await r.aclose()


async def stored_in_broker(url: str) -> int | None:
    """Messages the namespace's JetStream stream holds (None for other brokers)."""
    parts = urlparse(url)
    if parts.scheme != "nats":
        return None
    import nats

    nc = await nats.connect(urlunparse(parts._replace(query="")))
    try:
        info = await nc.jetstream().stream_info(f"PLANTCREW_{parts.query.split('=')[-1]}")
        return int(info.state.messages)
    finally:
        await nc.close()


# ---- the crew -----------------------------------------------------------------------------
@dataclass
class ProcessCrew:
    """``plantcrew coordinator`` and ``workers`` × ``plantcrew worker`` (the four task roles)."""

    bus_url: str
    db_url: str
    workers: int
    config: Path  # the config dir (see config_dir)
    count_dir: str | None = None  # count each process's NATS traffic there (nats_count.py)
    procs: list[tuple[subprocess.Popen[bytes], int]] = field(default_factory=list)

    def start(self) -> None:
        env = dict(os.environ, PLANTCREW_LOG_LEVEL="WARNING")
        # on a broker bus the crew refuses to start without a strong approval secret: the
        # caller's, else one made for this crew (the driver's plant checks no token)
        secret = env.get("PLANTCREW_APPROVAL_SECRET") or secrets.token_hex(32)
        env["PLANTCREW_APPROVAL_SECRET"] = secret
        roles = [a for r in TASK_ROLES for a in ("--role", r)]
        coordinator = ["coordinator", "--concurrency", str(COORDINATOR_CONSUMERS)]
        worker = ["worker", *roles, "--concurrency", str(AGENTS_PER_WORKER)]
        coordinators = self.workers if COORDINATORS_SCALE else 1
        commands = [coordinator] * coordinators + [worker] * self.workers
        for args in commands:
            port = free_port()
            argv = [sys.executable, "-m", "plantcrew.cli_processes", *args]
            if self.count_dir is not None:
                argv[1:1] = [str(ROOT / "bench" / "nats_count.py"), self.count_dir]
            argv += ["--bus", self.bus_url, "--db", self.db_url, "--probe-port", str(port)]
            argv += ["--probe-host", "127.0.0.1", "--config-dir", str(self.config)]
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
            self.procs.append((proc, port))
        deadline = time.monotonic() + 300
        for proc, port in self.procs:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"crew process {proc.args!r} did not start") from None
                    time.sleep(0.2)

    def parts(self) -> dict[str, list[int]]:
        """Pids of the crew's processes: ``coordinator`` and ``workers``."""
        out: dict[str, list[int]] = {"coordinator": [], "workers": []}
        for proc, _ in self.procs:
            argv = cast(list[str], proc.args)
            out["coordinator" if "coordinator" in argv else "workers"].append(proc.pid)
        return out

    def stop(self) -> None:
        for proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)


# ---- the driver ---------------------------------------------------------------------------
class BenchPlant:
    """The plant of every run: accepts each command once (approval checked by the crew)."""

    def __init__(self) -> None:
        self.commands = 0

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        self.commands += 1
        return ActuatorReceipt(
            action_id=cmd.action_id, idempotency_key=cmd.idempotency_key, status="executed", ts=0
        )


class Driver:
    """Publishes detections, answers commands, reports recovery, times each incident."""

    def __init__(self, bus: Bus, store: Store) -> None:
        self.bus, self.store = bus, store
        self.plant = BenchPlant()
        self.gateway = PlantGateway(bus, self.plant, run_id=None, subject=f"{COMMANDS}.*")
        self.sent: dict[str, float] = {}
        self.closed: dict[str, tuple[float, str]] = {}
        self.waiting: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        await self.gateway.start()
        await self.bus.subscribe(Subjects.INCIDENTS, self._on_update)

    def make_runs(self, n: int) -> list[str]:
        started = datetime.now(UTC) - timedelta(seconds=1)
        config = {
            "scenario": {"name": "bench", "plant": default_plant().model_dump(mode="json")},
            "policies": Policies.load(DEFAULT_CONFIG_DIR / "policies.yaml").model_dump(mode="json"),
        }
        ids = [f"run-bench{uuid.uuid4().hex[:12]}" for _ in range(n)]
        with self.store.tx() as s:
            for run_id in ids:
                s.add(Run(id=run_id, scenario="bench", started_at=started, config=config))
        return ids

    async def ready(self, timeout: float = 120.0) -> None:
        """Until the Coordinator answers a clock beacon with every capability live."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hb = AgentHeartbeat(agent_id="bench", role="runner", capabilities=[])
            msg = Message.new(hb, source="bench", subject=CLOCK, run_id="bench-ready")
            with contextlib.suppress(Exception):
                reply = await self.bus.request(msg, timeout=5)
                assert isinstance(reply.payload, AgentHeartbeat)
                if set(reply.payload.capabilities) >= NEEDED:
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError("the crew did not become ready")

    async def _on_update(self, msg: Message) -> None:
        p = msg.payload
        if not isinstance(p, IncidentUpdated) or msg.run_id not in self.sent:
            return
        if p.status == "verifying":  # the command went out: the plant recovers
            cleared = AnomalyCleared(device_id="pump1", ts=1.0)
            await self.bus.publish(
                msg.reply(cleared, source="monitor-bench", subject=Subjects.EVENTS)
            )
        elif p.status in ("resolved", "escalated") and msg.run_id not in self.closed:
            self.closed[msg.run_id] = (time.perf_counter(), p.status)
            self.waiting[msg.run_id].set()

    async def incident(self, run_id: str, timeout: float = 120.0) -> None:
        anomaly = AnomalyDetected(device_id="pump1", score=0.99, ts=1.0, deviations=DEVIATIONS)
        msg = Message.new(
            anomaly, source="monitor-bench", subject=Subjects.EVENTS,
            run_id=run_id, correlation_id=run_id,
        )  # fmt: skip
        self.waiting[run_id] = asyncio.Event()
        self.sent[run_id] = time.perf_counter()
        await self.bus.publish(msg)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.waiting[run_id].wait(), timeout)

    async def drive(self, runs: list[str], inflight: int) -> float:
        """Every run's incident, ``inflight`` at a time; returns the wall seconds taken."""
        gate = asyncio.Semaphore(inflight)

        async def one(run_id: str) -> None:
            async with gate:
                await self.incident(run_id)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in runs))
        return time.perf_counter() - t0


async def bench_one(
    backend: str,
    workers: int,
    n: int,
    inflight: int,
    db: str,
    warmup: int,
    config: Path,
    stub: Any = None,
    count_dir: str | None = None,
) -> dict[str, Any]:
    """One configuration's figures. ``config`` is the crew's config dir; ``stub`` the
    loopback model server when the models have a latency (RuntimeError when a model call
    went elsewhere); ``count_dir``: count every process's NATS traffic there (this process
    already counts into it, see ``nats_count``)."""
    tag = uuid.uuid4().hex[:10]
    bus_url = (
        f"memory://bench{tag}" if backend == "memory" else f"{BROKERS[backend]}?namespace=b{tag}"
    )
    with fresh_database(db) as db_url:
        store = Store(db_url)
        bus = await connect(bus_url)
        crew: ProcessCrew | None = None
        hosts: list[object] = []
        try:
            if backend == "memory":
                crew_config = CrewConfig.load(config / "crew.yaml")
                coord = CoordinatorHost(
                    bus, store, config=crew_config, concurrency=COORDINATOR_CONSUMERS,
                    signatures=load_signatures(config / "signatures.yaml"),
                    budgets=load_models_config(config / "models.yaml").budgets,
                )  # fmt: skip
                work = WorkerHost(
                    bus, store, roles=TASK_ROLES, config_dir=config, concurrency=workers,
                )  # fmt: skip
                await coord.start()
                await work.start()
                hosts = [work, coord]
            else:
                crew = ProcessCrew(bus_url, db_url, workers, config, count_dir)
                await asyncio.to_thread(crew.start)
            driver = Driver(bus, store)
            await driver.start()
            await driver.ready()
            await driver.drive(driver.make_runs(warmup), inflight)
            runs = driver.make_runs(n)
            me = "driver" if crew is not None else "driver+crew"
            parts = {me: [os.getpid()], **(crew.parts() if crew else {}), **_servers()}
            await asyncio.sleep(1.5)  # the warm-up's counts reach pg_stat_database
            idle = await idle_traffic(count_dir, parts) if count_dir else None
            sent_before = nats_count.read(count_dir) if count_dir else None
            if sent_before is not None:
                sent_before.update({f"server.{k}": v for k, v in server_counts().items()})
            tx_before = db_transactions(db_url)
            before = cpu_snapshot(parts)
            requests_before = len(stub.requests) if stub is not None else 0
            wall = await driver.drive(runs, inflight)
            used = cpu_used(parts, before)
            await asyncio.sleep(0.5)  # the processes' last counts reach their files
            traffic = nats_count.read(count_dir) if count_dir else None
            if traffic is not None and sent_before is not None:
                traffic.update({f"server.{k}": v for k, v in server_counts().items()})
                traffic.subtract(sent_before)
            requests = len(stub.requests) - requests_before if stub is not None else None
            await asyncio.sleep(1.5)
            calls = model_calls(store, runs)
            check_model_calls(calls, requests, n)
            tx_after = db_transactions(db_url)
            tx = None if tx_before is None or tx_after is None else tx_after - tx_before
            lat = [
                1000 * (driver.closed[r][0] - driver.sent[r]) for r in runs if r in driver.closed
            ]
            resolved = sum(1 for r in runs if driver.closed.get(r, (0, ""))[1] == "resolved")
            with store.tx() as s:
                from sqlmodel import func, select

                persisted = s.exec(select(func.count()).select_from(MessageRecord)).one()
            broker = await stored_in_broker(bus_url)
            return {
                "backend": backend,
                "workers": workers,
                "incidents": n,
                "resolved": resolved,
                "per_s": resolved / wall if wall else 0.0,
                "p50_ms": statistics.median(lat) if lat else float("nan"),
                "p99_ms": pct(lat, 0.99) if lat else float("nan"),
                "db_messages": int(persisted),
                "broker_messages": broker,
                "commands": driver.plant.commands,
                "cpu_ms": {k: 1000 * v / n for k, v in used.items() if parts.get(k) or v},
                "db_transactions": None if tx is None else tx / n,
                "model_calls": sum(calls.values()) / n,
                "stub_requests": None if requests is None else requests / n,
                "nats_per_incident": None
                if traffic is None
                else {k: v / n for k, v in sorted(traffic.items()) if v},
                "nats_idle": idle,
            }
        finally:
            for h in hosts:
                await h.stop()  # type: ignore[attr-defined]
            if crew is not None:
                await asyncio.to_thread(crew.stop)
            await bus.close()
            store.dispose()
            if backend != "memory":
                await drop_namespace(bus_url)


def model_label(latency_ms: float, stub: Any) -> str:
    """What answers the crew's model calls, for the report."""
    if stub is None:
        return "playbook model (answers at once, in the worker)"
    return (
        f"model latency {latency_ms:g} ms: playbook answers from openai/{STUB_MODEL} "
        f"at {stub.base_url} (OpenAI chat completions over HTTP, through litellm)"
    )


def command_line() -> str:
    """The exact command, with the ``BENCH_*`` knobs set in the environment."""
    knobs = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")]
    knobs = [k for k in knobs if not k.startswith(f"{STUB_KEY_ENV}=")]  # set by the bench
    return " ".join(shlex.quote(a) for a in [*knobs, sys.executable, *sys.argv])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="incidents measured per configuration")
    ap.add_argument("--warmup", type=int, default=20, help="incidents before measuring")
    ap.add_argument("--inflight", type=int, default=32, help="incidents open at once")
    ap.add_argument("--workers", default="1,2", help="workers per role, comma-separated")
    ap.add_argument("--backends", default="memory,nats,redis")
    ap.add_argument(
        "--db", default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server URL (a fresh database is made on it) or 'sqlite'",
    )  # fmt: skip
    ap.add_argument(
        "--model-latency-ms", type=float, default=0.0,
        help="0: the playbook model in the workers (answers at once); L > 0: every model call "
        "goes over HTTP to a loopback OpenAI-compatible server answering the playbook's "
        "answer after L ms (the model-bound regime)",
    )  # fmt: skip
    ap.add_argument(
        "--count-nats", action="store_true",
        help="count, on the client side, the messages every process sends to and receives "
        "from nats-server (JetStream publishes, pull requests, consumer info, acks, core "
        "messages; bench/nats_count.py), per incident and per second while the crew is idle",
    )  # fmt: skip
    ap.add_argument(
        "--own-nats", action="store_true",
        help="run nats:// on a nats-server of the bench's own (free port, fresh store, "
        "monitoring on): its CPU alone is counted, and with --count-nats its counters shown",
    )  # fmt: skip
    args = ap.parse_args()
    if args.model_latency_ms < 0:
        ap.error("--model-latency-ms must be >= 0")
    from plantcrew.logs import configure

    configure("WARNING")
    with contextlib.ExitStack() as stack:
        stub = None
        if args.model_latency_ms > 0:
            stub = stack.enter_context(model_server(args.model_latency_ms))
        config = config_dir(stub.base_url if stub is not None else None)
        if config != DEFAULT_CONFIG_DIR:
            import shutil

            stack.callback(shutil.rmtree, config.parent, ignore_errors=True)
        label = model_label(args.model_latency_ms, stub)
        print(f"{label}; {AGENTS_PER_WORKER} agent(s) per role per worker process", flush=True)
        count_dir = None
        if args.own_nats:
            BROKERS["nats"] = stack.enter_context(own_nats_server())
        if args.count_nats:
            count_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nats-count-"))
            nats_count.install(count_dir)
        for backend in args.backends.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                row = await bench_one(
                    backend, workers, args.n, args.inflight, args.db, args.warmup, config, stub,
                    count_dir if backend == "nats" else None,
                )  # fmt: skip
                print_row(row)
    db = "SQLite" if args.db == "sqlite" else "PostgreSQL"
    print(
        f"\n{os.cpu_count()} CPUs, {db}, {label}; load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    print("command: " + command_line())


def print_row(row: dict[str, Any]) -> None:
    """One configuration's figures, as lines of the report."""
    print(
        f"{row['backend']:>6}  workers/role {row['workers']}  "
        f"{row['per_s']:7.1f} incidents/s  p50 {row['p50_ms']:7.1f} ms  "
        f"p99 {row['p99_ms']:7.1f} ms  resolved {row['resolved']}/{row['incidents']}  "
        f"db messages {row['db_messages']}  broker messages {row['broker_messages']}",
        flush=True,
    )
    cpu = row["cpu_ms"]
    assert isinstance(cpu, dict)
    print(
        "        CPU ms per incident: "
        + "  ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f"  (total {sum(cpu.values()):.1f})",
        flush=True,
    )
    calls = f"        model calls per incident: {row['model_calls']:.1f} recorded"
    if row["stub_requests"] is not None:
        calls += f", {row['stub_requests']:.1f} HTTP requests to {STUB_MODEL} (all served by it)"
    print(calls, flush=True)
    if row["db_transactions"] is not None:
        print(
            f"        database transactions per incident: {row['db_transactions']:.1f}"
            " (PostgreSQL commits, every process)",
            flush=True,
        )
    for label, key in (("per incident", "nats_per_incident"), ("per idle second", "nats_idle")):
        if row.get(key) is not None:
            counts = "  ".join(f"{k} {v:.1f}" for k, v in row[key].items())
            print(f"        NATS messages {label}: {counts}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
