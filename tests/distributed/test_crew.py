"""The crew as processes (``plantcrew up`` and two ``plantcrew worker --role operator``) on
NATS and on Redis, with PostgreSQL: scenarios pass with the crew in other processes while a
poison message is dead-lettered with its reason; a message delivered twice is processed once;
a worker stopped (SIGTERM) or SIGKILLed in the middle of a task is replaced by another that
finishes it, and no action is executed twice.

CI runs :data:`CI_SCENARIOS` and the worker-fault tests on NATS; ``PLANTCREW_TEST_FULL=1``
runs every file of ``scenarios/`` and every test on both brokers (see the README for the time
it takes).

The crew's processes are shared by the tests of this module (started once per broker); the
SIGTERM and SIGKILL tests run last, as each takes an Operator worker away.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, func, select

from plantcrew.bus import connect
from plantcrew.crews.backlog import DurableBacklog
from plantcrew.messages import Capability, IncidentUpdated, Message, Subjects, Task
from plantcrew.plant.actuators import ActuatorCommand, ActuatorReceipt
from plantcrew.plant.bus_actuator import PlantGateway
from plantcrew.scenarios.runner import RunResult, run_scenario
from plantcrew.scenarios.schema import load_scenario, resolve_data_path
from plantcrew.store import Action, AuditEntry, Incident, MessageRecord, Store
from tests.conftest import ROOT, bus_url_for
from tests.distributed.conftest import FAULT_BROKERS, FULL, Crew, until
from tests.scenarios.test_run_signals import FIRST_LINE, HISTORIAN, START_S, STOP_S

SHORT = Path(__file__).parent / "scenarios" / "short-bearing.yaml"


class Watcher:
    """A live view of a run: what the runner shows while the crew works elsewhere."""

    def __init__(self) -> None:
        self.steps = 0
        self.messages: list[Message] = []

    def on_step(self, t: float, batches: Any, scores: Any) -> None:
        self.steps += 1

    def on_message(self, msg: Message) -> None:
        self.messages.append(msg)


async def run_remote(
    crew: Crew, scenario: Path = SHORT, observer: Watcher | None = None
) -> RunResult:
    result = await run_scenario(
        scenario, bus_url=crew.bus_url, db_url=crew.db_url, config_dir=crew.config_dir,
        crew="remote", observer=observer,
    )  # fmt: skip
    failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
    assert result.passed, "; ".join(failed)
    return result


async def settled(bus_url: str, timeout: float = 60.0) -> None:
    """Wait until the whole crew acknowledged every durable message."""
    bus = await connect(bus_url)
    backlog = DurableBacklog(bus)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while await backlog.count():
            assert loop.time() < end, f"crew not settled: {backlog.stuck}"
            await asyncio.sleep(0.1)
    finally:
        await backlog.close()
        await bus.close()


CI_SCENARIOS = [
    ("nats", "safety-blocks-speed-cut"),  # the run's own policies reach the workers
    ("nats", "approval-timeout"),  # a plant-time timeout in a Coordinator of its own
    ("redis", "safety-blocks-speed-cut"),
]
SCENARIOS = (
    [(b, p.stem) for b in ("nats", "redis") for p in sorted((ROOT / "scenarios").glob("*.yaml"))]
    if FULL
    else CI_SCENARIOS
)


async def publish_poison(bus_url: str) -> Message:
    """A task whose handler fails at every delivery (no anomaly in its input), and bytes on
    crew.events that are not a message at all. Returns the task."""
    bus = await connect(bus_url)
    poison = Message.new(
        Task(task_id=f"poison-{uuid.uuid4().hex[:8]}", incident_id="nowhere",
             capability=Capability.DIAGNOSE),
        source="test",
        subject=Subjects.tasks(Capability.DIAGNOSE),
    )  # fmt: skip
    try:
        await bus.publish(poison)
        await bus.publish_raw(Subjects.EVENTS, f'{{"oops": "{poison.id}"}}'.encode())
    finally:
        await bus.close()
    return poison


@pytest.mark.parametrize(("shared_crew", "scenario"), SCENARIOS, indirect=["shared_crew"])
async def test_scenario_passes_with_the_crew_elsewhere_while_poison_is_dead_lettered(
    shared_crew: Crew, scenario: str
) -> None:
    path = ROOT / "scenarios" / f"{scenario}.yaml"
    spec = load_scenario(path)
    if spec.telemetry is not None and not resolve_data_path(spec.telemetry.path, path).is_file():
        pytest.skip(f"{path.name} replays a data file that is absent (set PLANTCREW_DATA_DIR)")
    poison = await publish_poison(shared_crew.bus_url)
    watcher = Watcher()
    result = await run_remote(shared_crew, path, watcher)
    assert watcher.steps > 0
    news = [m.payload.status for m in watcher.messages if isinstance(m.payload, IncidentUpdated)]
    assert news and news[-1] in ("resolved", "escalated")  # the crew's news reached the view
    assert {m.run_id for m in watcher.messages} == {result.run_id}
    await settled(shared_crew.bus_url)
    store = Store(shared_crew.db_url)
    try:
        sources = {m.source for m in store.messages(result.run_id)}
        # the answers came from the worker processes (<role>-<host>-<pid>)
        assert "coordinator" in sources
        assert any(s.startswith("diagnostic-") and s.count("-") >= 2 for s in sources)
        # models.yaml's budgets hold for a Coordinator process too: each step says its status
        steps = [Message.from_bytes(m.body).payload for m in store.messages(result.run_id)]
        diagnose = [t for t in steps if isinstance(t, Task) and t.capability == "diagnose"]
        assert diagnose and all(t.input["budget"]["scopes"] for t in diagnose)
        assert store.verify_audit() == []
        letters = store.dead_letters()
        dead = [d for d in letters if d.original_id == str(poison.id)]
        assert len(dead) == 1 and not dead[0].quarantined
        assert dead[0].original_subject == "crew.tasks.diagnose" and dead[0].attempts == 3
        assert "KeyError" in dead[0].reason and "anomaly" in dead[0].reason
        bad = [d for d in letters if str(poison.id) in d.raw and d.quarantined]
        assert len(bad) == 1 and bad[0].original_subject == "crew.events"
        assert "validation error" in bad[0].reason or "payload" in bad[0].reason
    finally:
        store.dispose()


class CountingActuator:
    """Counts the commands that reach the plant (none should, for a duplicate)."""

    def __init__(self) -> None:
        self.commands: list[ActuatorCommand] = []

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        self.commands.append(cmd)
        return ActuatorReceipt(
            action_id=cmd.action_id, idempotency_key=cmd.idempotency_key, status="duplicate", ts=0.0
        )


def _state(store: Store, run_id: str) -> dict[str, Any]:
    with store.tx() as s:
        return {
            "incidents": sorted(
                (i.id, i.status, i.version)
                for i in s.exec(select(Incident).where(col(Incident.run_id) == run_id))
            ),
            "actions": sorted(
                (a.id, a.status) for a in s.exec(select(Action).where(col(Action.run_id) == run_id))
            ),
            "audit": s.exec(select(func.count()).select_from(AuditEntry)).one(),
        }


@pytest.mark.parametrize("shared_crew", FAULT_BROKERS, indirect=True)
async def test_the_run_command_with_a_remote_crew_leaves_every_step_to_the_crew_processes(
    shared_crew: Crew,
) -> None:
    """``plantcrew run --crew remote``: the README's distributed run. The runner keeps only
    the plant; every answer comes from the crew's processes, none from the runner's own."""
    runner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plantcrew.cli", "run", str(SHORT), "--json", "--crew", "remote",
        "--bus", shared_crew.bus_url, "--db", shared_crew.db_url,
        cwd=ROOT, env=shared_crew.env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, errs = await asyncio.wait_for(runner.communicate(), timeout=300)
    assert runner.returncode == 0, errs.decode()[-2000:]
    result = json.loads(out)
    assert result["passed"] and result["incidents"]
    await settled(shared_crew.bus_url)
    store = Store(shared_crew.db_url)
    try:
        sources = {m.source for m in store.messages(result["run_id"])}
    finally:
        store.dispose()
    agents = {s for s in sources if s.count("-") >= 2}  # <role>-<host>-<pid>
    assert any(s.startswith("diagnostic-") for s in agents), sources
    crew_pids = {str(p.pid) for p in shared_crew.processes}
    assert {s.rsplit("-", 1)[1] for s in agents} <= crew_pids, (sources, crew_pids)


@pytest.mark.parametrize("shared_crew", FAULT_BROKERS, indirect=True)
async def test_sigterm_interrupts_a_remote_run_and_resume_completes_it_on_the_crew(
    shared_crew: Crew, tmp_path: Path
) -> None:
    """``plantcrew run --crew remote`` on SIGTERM: the run ends at the end of its step with
    the crew's processes untouched, is recorded ``interrupted``, exits 143 and says how to
    resume; ``--resume`` on the same crew completes it (the historian replay of scenarios/ at
    10 plant s per wall second, stopped before its fault at 540 s)."""
    store = Store(shared_crew.db_url)
    remote = ["--crew", "remote", "--bus", shared_crew.bus_url, "--db", shared_crew.db_url]

    async def start(*args: str, err: Path) -> asyncio.subprocess.Process:
        with err.open("w") as err_f:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "plantcrew.cli", "run", str(HISTORIAN), "--json", *args,
                *remote, cwd=ROOT, env=shared_crew.env(), stdout=asyncio.subprocess.PIPE,
                stderr=err_f, start_new_session=True,
            )  # fmt: skip

    err = tmp_path / "run.err"
    proc = await start("--speed", "10", err=err)

    async def running_until(what: str, check: Any) -> Any:  # an early exit fails at once
        found = await until(what, lambda: proc.returncode is not None or check(), START_S)
        assert proc.returncode is None, f"ended before {what}: {err.read_text()[-3000:]}"
        return found

    try:
        found = await running_until("the run id", lambda: FIRST_LINE.search(err.read_text()))
        run_id = found.group(1)
        await running_until("a checkpoint", lambda: store.get_run(run_id).plant_time > 0)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), STOP_S)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    stderr = err.read_text(errors="replace")
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted by SIGTERM" in stderr, stderr[-3000:]
    assert json.loads(out)["status"] == "interrupted"
    run = store.get_run(run_id)
    assert run.status == "interrupted" and 0 < run.plant_time < 540, run
    assert all(p.proc and p.proc.poll() is None for p in shared_crew.processes)  # untouched

    err = tmp_path / "resume.err"
    again = await start("--resume", run_id, err=err)
    out, _ = await asyncio.wait_for(again.communicate(), START_S)
    assert again.returncode == 0, err.read_text(errors="replace")[-3000:]
    resumed = json.loads(out)
    assert resumed["run_id"] == run_id and resumed["status"] == "passed", resumed
    await settled(shared_crew.bus_url)
    try:
        assert store.get_run(run_id).status == "passed"
        (incident,) = store.incidents(run_id)
        assert incident.root_cause == "outlet_valve_closure", incident
        # only the export's bad rows, each once (not again after the resume)
        dead = [d for d in store.dead_letters() if d.run_id == run_id]
        assert all(d.reason.startswith("bad CSV row") for d in dead), dead
        assert len({d.raw for d in dead}) == len(dead), dead
    finally:
        store.dispose()


async def cli_run_local(bus_url: str, db_url: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``plantcrew run SHORT --crew local --bus BUS``: its exit code, stdout and stderr."""
    runner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plantcrew.cli", "run", str(SHORT), "--json", "--crew", "local",
        "--bus", bus_url, "--db", db_url, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, errs = await asyncio.wait_for(runner.communicate(), timeout=300)
    assert runner.returncode is not None
    return runner.returncode, out.decode(), errs.decode()


@pytest.mark.parametrize("shared_crew", FAULT_BROKERS, indirect=True)
async def test_a_local_run_refuses_a_broker_where_a_crew_runs(shared_crew: Crew) -> None:
    """``plantcrew run`` with its own crew (``--crew local``, the default) on the shared crew's
    broker would share its subjects and queue groups: it refuses, exit 2, one line naming
    who answered and ``--crew remote``, and writes no run."""
    store = Store(shared_crew.db_url)
    try:
        runs = {r.id for r in store.runs(limit=10_000)}
        code, out, errs = await cli_run_local(
            shared_crew.bus_url, shared_crew.db_url, shared_crew.env()
        )
        runs_after = {r.id for r in store.runs(limit=10_000)}
    finally:
        store.dispose()
    assert code == 2, (out[-2000:], errs[-2000:])
    assert runs_after == runs
    (line,) = errs.strip().splitlines()
    assert "a crew already runs on" in line and "--crew remote" in line, line
    crew_pids = {str(p.pid) for p in shared_crew.processes}
    assert any(f"-{pid} answered" in line for pid in crew_pids), (line, crew_pids)
    assert not out


async def test_a_local_run_on_a_broker_of_its_own_passes(tmp_path: Path) -> None:
    """The same run on a namespace where no crew runs (the broker is idle there) passes."""
    env = dict(os.environ, PLANTCREW_LOG_JSON="false")
    db = f"sqlite:///{tmp_path / 'own.db'}"
    code, out, errs = await cli_run_local(bus_url_for("nats"), db, env)
    assert code == 0, (out[-2000:], errs[-2000:])
    assert json.loads(out)["passed"]


@pytest.mark.parametrize("shared_crew", FAULT_BROKERS, indirect=True)
async def test_a_message_delivered_twice_is_processed_once(shared_crew: Crew) -> None:
    run_id = (await run_remote(shared_crew)).run_id  # its action is executed
    store = Store(shared_crew.db_url)
    bus = await connect(shared_crew.bus_url)
    plant = CountingActuator()
    gateway = PlantGateway(bus, plant, run_id=run_id)
    await gateway.start()
    try:
        before = _state(store, run_id)
        records = [
            r
            for r in store.messages(run_id)
            if r.subject == Subjects.EVENTS or r.subject.startswith("crew.tasks.")
        ]
        assert {r.type for r in records} >= {"task.assigned", "action.executed"}
        for r in records:  # again, as new broker messages: no broker dedupe helps here
            await bus.publish_raw(r.subject, r.body.encode())
        await settled(shared_crew.bus_url)
        assert _state(store, run_id) == before
        assert plant.commands == []  # the actuate task came back: nothing was sent again
        with store.tx() as s:
            ids = [r.id for r in records]
            counts = s.exec(
                select(MessageRecord.id, func.count())
                .where(col(MessageRecord.id).in_(ids))
                .group_by(col(MessageRecord.id))
            ).all()
        assert {n for _, n in counts} == {1} and len(counts) == len(set(ids))
        assert store.verify_audit() == []
    finally:
        await gateway.stop()
        await bus.close()
        store.dispose()


def gateway_counts(monkeypatch: Any) -> list[dict[str, int]]:
    """A list that gets the plant gateway's command counts (``executed``,
    ``already_executed``) when the run stops it."""
    handled: list[dict[str, int]] = []
    original_stop = PlantGateway.stop

    async def keep_counts(self: PlantGateway) -> None:
        handled.append(dict(self.handled))
        await original_stop(self)

    monkeypatch.setattr(PlantGateway, "stop", keep_counts)
    return handled


@pytest.mark.parametrize("shared_crew", FAULT_BROKERS, indirect=True)
async def test_sigterm_mid_task_hands_the_task_back_and_the_worker_exits_0(
    shared_crew: Crew, monkeypatch: Any
) -> None:
    """The Operator waiting for the plant's answer is told to stop: it waits its grace (2 s),
    hands the task back and exits 0; another Operator finishes the task."""
    original = PlantGateway._on_command
    stopped: list[Any] = []

    async def answer_after_stopping_the_sender(self: PlantGateway, msg: Message) -> Any:
        reply = await original(self, msg)  # the plant carries the command out
        if not stopped:
            proc = shared_crew.by_pid(int(msg.source.rsplit("-", 1)[1]))
            proc.signal(signal.SIGTERM)
            assert proc.proc is not None
            stopped.extend([msg.source, await asyncio.to_thread(proc.proc.wait, 60), proc])
        return reply

    monkeypatch.setattr(PlantGateway, "_on_command", answer_after_stopping_the_sender)
    handled = gateway_counts(monkeypatch)
    result = await run_remote(shared_crew)
    source, code, proc = stopped
    assert code == 0
    assert "handing back tasks still in flight" in proc.tail(200)
    assert handled == [{"executed": 1, "already_executed": 1}]
    store = Store(shared_crew.db_url)
    try:
        (action,) = store.actions(run_id=result.run_id)
        assert action.status == "executed"
        (done,) = store.messages(result.run_id, types=["action.executed"])
        assert done.source.startswith("operator-") and done.source != source
    finally:
        store.dispose()


@pytest.mark.parametrize("shared_crew", FAULT_BROKERS, indirect=True)
async def test_sigkill_mid_task_another_worker_finishes_it_executing_nothing_twice(
    shared_crew: Crew, monkeypatch: Any
) -> None:
    """The Operator that sent the command dies before it hears back; the task returns to the
    group after its ack wait, the other Operator finishes it."""
    original = PlantGateway._on_command
    victims: list[str] = []

    async def answer_after_killing_the_sender(self: PlantGateway, msg: Message) -> Any:
        reply = await original(self, msg)  # the plant carries the command out
        if not victims:
            victims.append(msg.source)
            pid = int(msg.source.rsplit("-", 1)[1])  # operator-<host>-<pid>
            await asyncio.to_thread(shared_crew.by_pid(pid).kill)
        return reply

    monkeypatch.setattr(PlantGateway, "_on_command", answer_after_killing_the_sender)
    handled = gateway_counts(monkeypatch)
    result = await run_remote(shared_crew)
    assert victims, "no command reached the plant"
    # the plant ran the command once; the survivor's repeat was answered from the receipt
    assert handled == [{"executed": 1, "already_executed": 1}]
    store = Store(shared_crew.db_url)
    try:
        actions = store.actions(run_id=result.run_id)
        assert [(a.command, a.status) for a in actions] == [("stop", "executed")]
        done = store.messages(result.run_id, types=["action.executed"])
        assert len(done) == 1 and done[0].source != victims[0]
        assert done[0].source.startswith("operator-")
    finally:
        store.dispose()
