"""Running a scenario: a simulated plant (or a CSV replay) feeding a crew, step by step.

Each step advances the plant by ``dt_s`` plant seconds, publishes one telemetry batch per
device, lets the crew tick (heartbeats, timeouts, the scripted human), and waits until the bus
is quiet, so a run with a seed on ``memory://`` is deterministic and an hour of plant time runs
in seconds. The run's plant time is checkpointed in the database; ``resume`` rebuilds the plant
from the recorded commands, re-warms the Monitor on the same telemetry, and carries on with
the incidents where the database has them: no action is executed twice.

With ``crew="remote"`` the Coordinator and the agents are other processes on the same broker
bus and database (``plantcrew up``, or ``plantcrew coordinator`` and ``plantcrew worker``):
the runner keeps the plant, serves its commands on ``plant.commands.<run_id>``, drives the
Coordinator's ticks with clock beacons and paces each step on the crew's durable backlog
(``plantcrew.crews.remote``). The policies the run uses are kept in ``Run.config`` so that
workers elsewhere judge by the same ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from uuid6 import uuid7

from plantcrew.agents import Policies
from plantcrew.bus import Bus, connect
from plantcrew.bus.base import dead_letter
from plantcrew.crews.config import CrewConfig
from plantcrew.crews.context import assets_of
from plantcrew.crews.crew import Crew, CrewParts
from plantcrew.crews.presence import answer_presence, heartbeat_of, refuse_if_crew_live
from plantcrew.crews.remote import RemoteCrew
from plantcrew.detect import MonitorConfig, load_signatures
from plantcrew.errors import ConfigError, ScenarioError
from plantcrew.llm import ModelRouter
from plantcrew.messages import Message, Subjects, TelemetryBatch
from plantcrew.plant.actuators import ActuatorCommand, SimulatedActuator
from plantcrew.plant.clock import Pacer, SimClock
from plantcrew.plant.csv_replay import CsvReplayError, CsvReplaySource, CsvRowProblem
from plantcrew.plant.sim import SimulatedPlant
from plantcrew.scenarios.expectations import ExpectationResult, check
from plantcrew.scenarios.human import ScriptedHuman
from plantcrew.scenarios.schema import (
    Scenario,
    load_scenario,
    located_in_scenario,
    missing_file,
    resolve_data_path,
)
from plantcrew.settings import get_settings, redacted_url
from plantcrew.store import Incident, Run, Store
from plantcrew.store.tokens import check_token, require_approval_secret

log = structlog.get_logger("plantcrew.runner")
CHECKPOINT_EVERY_S = 10.0


class RunObserver(Protocol):
    """What a live view gets told while a scenario runs."""

    def on_step(
        self, t: float, batches: list[TelemetryBatch], scores: dict[str, float]
    ) -> None: ...

    def on_message(self, msg: Message) -> None: ...


@dataclass
class RunResult:
    """The outcome of one run: its incidents and expectations (plant seconds throughout).

    ``status`` is the run's recorded status: ``passed``, ``failed`` or ``interrupted`` (ended
    before its last step by ``stop`` or ``stop_after_s``; ``resume`` continues it)."""

    run_id: str
    scenario: str
    passed: bool
    incidents: list[dict[str, Any]]
    expectations: list[ExpectationResult]
    plant_seconds: float
    wall_seconds: float
    actions: list[dict[str, Any]] = field(default_factory=list)
    status: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``plantcrew run --json`` object."""
        return {
            "run_id": self.run_id,
            "scenario": self.scenario,
            "status": self.status,
            "passed": self.passed,
            "incidents": self.incidents,
            "expectations": [
                {"name": e.name, "passed": e.passed, "detail": e.detail} for e in self.expectations
            ],
            "plant_seconds": self.plant_seconds,
            "wall_seconds": round(self.wall_seconds, 3),
        }


def approval_verifier(cmd: ActuatorCommand) -> None:
    """The actuator's own check: the token must have been issued for exactly this command."""
    check_token(
        cmd.approval_token or "",
        f"apr-{cmd.action_id}",
        cmd.action_id,
        cmd.device_id,
        cmd.command,
        dict(cmd.parameters),
    )


class _Telemetry:
    """The run's telemetry: the simulated plant, or a CSV replay on the simulated clock."""

    def __init__(self, scenario: Scenario, scenario_path: str, seed: int) -> None:
        self.scenario = scenario
        self.scenario_path = scenario_path
        self.plant = SimulatedPlant(scenario.plant, scenario.faults, seed, scenario.dt_s)
        self.clock: SimClock = self.plant.clock
        self._csv: Iterator[TelemetryBatch] | None = None
        self._source: CsvReplaySource | None = None
        self._reported = 0
        self.batches = 0  # CSV batches replayed
        if scenario.telemetry is not None:
            path = resolve_data_path(scenario.telemetry.path, scenario_path)
            if not path.is_file():
                raise missing_file(
                    scenario_path, "telemetry.path", path, "is PLANTCREW_DATA_DIR set?"
                )
            source = CsvReplaySource(scenario.telemetry.spec(path))
            self._source = source
            self._csv = iter(source)
            self._csv_clock = SimClock(self.clock.start)

    @property
    def t(self) -> float:
        return self._csv_clock.t if self._csv is not None else self.plant.t

    def step(self) -> list[TelemetryBatch] | None:
        """The next batches, or None when a CSV replay has no more rows."""
        if self._csv is None:
            return self.plant.step()
        try:
            batch = next(self._csv, None)
        except CsvReplayError as exc:  # a layout field at fault: say where in the scenario
            raise located_in_scenario(self.scenario_path, exc) from None
        if batch is None:
            return None
        self._csv_clock.advance_to(max(r.ts for r in batch.readings))
        self.batches += 1
        return [batch]

    def check_replayed(self) -> None:
        """At the end of a CSV replay: raise CsvReplayError (naming the file) when no row
        could be replayed (a header alone, or every row bad), rather than pass the run's
        expectations on no telemetry at all."""
        if self._source is None or self.batches:
            return
        source = self._source
        detail = f"{source.rows_read} read"
        if source.problems:
            detail += f", {source.skipped} skipped as bad; the first: {source.problems[0]}"
        raise CsvReplayError(
            f"no data row could be replayed ({detail})", source=str(source.spec.path)
        )

    def device_of(self, problem: CsvRowProblem) -> str:
        """The device whose telemetry a bad row would have been: its bad column's, the
        file's one device, or ``csv`` when the row holds several."""
        columns = self._source.spec.columns if self._source is not None else {}
        if problem.column in columns:
            return columns[problem.column].device_id
        devices = {m.device_id for m in columns.values()}
        return devices.pop() if len(devices) == 1 else "csv"

    def new_problems(self) -> list[CsvRowProblem]:
        """The CSV rows skipped as bad since the last call (none for the simulator)."""
        if self._source is None:
            return []
        problems = self._source.problems[self._reported :]
        self._reported += len(problems)
        return problems


async def run_scenario(
    scenario_path: str | Path,
    *,
    bus_url: str = "memory://",
    db_url: str | None = None,
    seed: int | None = None,
    resume: str | None = None,
    observer: RunObserver | None = None,
    config_dir: Path | None = None,
    stop_after_s: float | None = None,
    on_checkpoint: Callable[[float], None] | None = None,
    pace: float | None = None,
    crew: str = "local",
    people: Callable[[float], None] | None = None,
    pacer: Pacer | None = None,
    on_run: Callable[[Run, bool], None] | None = None,
    stop: asyncio.Event | None = None,
) -> RunResult:
    """Run (or, with ``resume=RUN_ID``, continue) a scenario and check its expectations.

    Raises ConfigError for a bad scenario or config file, ScenarioError when the run cannot
    start, BusError/StoreError when the bus or database cannot be reached. On a broker bus
    it raises ConfigError, before anything is written, unless ``PLANTCREW_APPROVAL_SECRET``
    is a strong secret (:func:`~plantcrew.store.tokens.require_approval_secret`): the run's
    Coordinator issues approval tokens there and its plant checks them; with ``crew="local"``
    also when a crew already runs on that broker
    (:func:`~plantcrew.crews.presence.refuse_if_crew_live`; the run's own crew answers such
    probes while it runs).
    ``stop_after_s`` stops early at that plant time; ``pace`` runs at that multiple of real
    time (plant seconds per wall second, a CSV replay by its rows' timestamps) instead of as
    fast as possible, or ``pacer`` does (a :class:`Pacer` with its own sleep and clock).
    A CSV replay with no row to replay raises CsvReplayError. ``crew`` is
    ``local`` (the crew in this process) or ``remote`` (in other processes; see module doc).
    ``people`` is called with the plant time before the scripted human and the crew's tick of
    each step (a re-execution casts the votes people cast in the recorded run there).
    ``on_run`` is called once with the run's record and whether it is resumed, as soon as the
    run is in the database, before the crew starts (so a run killed later can be resumed by
    the id it was told).
    ``stop``, when set, ends the run at the end of the step under way (a ``pace`` wait is cut
    short), as a crew process stops on SIGTERM: no new telemetry, what is in flight finishes,
    the crew stops; the run is recorded ``interrupted`` at that plant time (``resume``
    continues it).
    """
    if crew not in ("local", "remote"):
        raise ScenarioError(f"crew must be 'local' or 'remote', got {crew!r}")
    if crew == "remote" and bus_url.startswith("memory:"):
        raise ScenarioError("a remote crew needs a broker bus (nats:// or redis://)")
    if bus_url:
        await _may_start_on(bus_url, crew)
    settings = get_settings()
    config_dir = config_dir or settings.config_dir
    db_url = db_url or settings.db_url
    store = Store(db_url)
    if resume is not None:
        run = store.get_run(resume)
        if not bus_url:  # the run's own bus
            bus_url = run.bus_url
            if ":***@" in bus_url:
                raise ConfigError(
                    f"run {run.id} ran on {redacted_url(bus_url)}, whose password is not"
                    " stored: give its bus URL again (--bus)"
                )
            await _may_start_on(bus_url, crew)
        if run.status == "crashed":
            store.update_run(run.id, status="running", finished_at=None)
        scenario_path = run.scenario_path
        seed = run.seed
    scenario = load_scenario(scenario_path)
    seed = scenario.seed if seed is None else seed
    tel = _Telemetry(scenario, str(scenario_path), seed)
    clock = tel.clock if scenario.telemetry is None else tel._csv_clock
    policies_path = config_dir / "policies.yaml"
    if scenario.policies:
        policies_path = resolve_data_path(scenario.policies, scenario_path)
        if not policies_path.is_file():
            raise missing_file(scenario_path, "policies", policies_path)
    policies = Policies.load(policies_path)
    router = ModelRouter.from_file(
        config_dir / "models.yaml", playbooks_path=config_dir / "playbooks.yaml"
    )
    crew_config = CrewConfig.load(config_dir / "crew.yaml", model_groups=router.groups)
    if resume is None:
        run = Run(
            id=f"run-{uuid7().hex[-12:]}",
            scenario=scenario.name,
            scenario_path=str(scenario_path),
            seed=seed,
            bus_url=redacted_url(bus_url),  # a password is never stored
            started_at=clock.start,
            config={
                "scenario": scenario.model_dump(mode="json"),
                "policies": policies.model_dump(mode="json"),
            },
        )
        store.create_run(run)
        store.audit(
            time=datetime.now(UTC),
            actor="runner",
            kind="config.loaded",
            run_id=run.id,
            data={
                "scenario": str(scenario_path),
                "seed": seed,
                "bus": bus_url,
                "config_dir": str(config_dir),
            },
        )
    if on_run is not None:
        on_run(run, resume is not None)
    parts = CrewParts(
        router=router,
        policies=policies,
        assets=assets_of(scenario.plant),
        signatures=load_signatures(config_dir / "signatures.yaml"),
        actuator=SimulatedActuator(tel.plant, verify_approval=approval_verifier),
        monitor=MonitorConfig(**scenario.monitor),
    )
    wall0 = time.perf_counter()
    bus = await connect(bus_url)
    loop_bus: Bus = bus
    if crew == "remote":
        remote = RemoteCrew(
            bus,
            clock,
            run_id=run.id,
            actuator=parts.actuator,
            on_message=observer.on_message if observer else None,
        )
        the_crew: Crew = remote
        loop_bus = remote.paced_bus
    else:
        the_crew = Crew.build(
            bus,
            store,
            clock,
            parts,
            crew_config,
            run_id=run.id,
            run_started=clock.start,
            on_message=observer.on_message if observer else None,
        )
    try:
        start_t: float = 0.0
        replayed: list[tuple[float, str, str, dict[str, Any]]] = []
        if resume is not None:
            start_t, replayed = await _restore(store, run, tel, the_crew)
        await the_crew.start()
        if crew == "local" and not bus_url.startswith("memory:"):  # a crew on this broker now
            await answer_presence(bus, lambda: heartbeat_of(the_crew.agents))
        if resume is not None and the_crew.coordinator is not None:
            await the_crew.coordinator.recover()
        await loop_bus.quiesce()
        human = ScriptedHuman(store, run.id, scenario.human)
        stopped = await _loop(
            scenario,
            run,
            tel,
            clock,
            loop_bus,
            the_crew,
            human,
            store,
            observer,
            start_t,
            replayed,
            stop_after_s,
            on_checkpoint,
            pacer or (Pacer(pace, sleep=_until_set(stop)) if pace else None),
            people,
            stop,
        )
    except Exception as exc:
        # not left "running": the run ended here (``--resume`` can still continue it)
        store.update_run(
            run.id,
            status="crashed",
            plant_time=clock.t,
            finished_at=datetime.now(UTC),
            summary={"passed": False, "error": f"{type(exc).__name__}: {exc}"},
        )
        raise
    finally:
        await the_crew.stop()
        await bus.close()
    if stop_after_s is not None and clock.t < scenario.duration_s:
        store.update_run(run.id, plant_time=clock.t)
    return _finish(store, scenario, run, clock.t, time.perf_counter() - wall0, stopped=stopped)


def _until_set(stop: asyncio.Event | None) -> Callable[[float], Awaitable[None]]:
    """``asyncio.sleep``, cut short when ``stop`` is set (a pacer's sleep while stopping)."""
    if stop is None:
        return asyncio.sleep

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return sleep


async def _may_start_on(bus_url: str, crew: str) -> None:
    """ConfigError unless a run may start on ``bus_url``: the approval secret on a broker, and
    there a local crew must be the only crew (another one would share its subjects)."""
    require_approval_secret(bus_url, "a scenario run")
    if crew == "local" and not bus_url.startswith("memory:"):
        await refuse_if_crew_live(bus_url)


async def _restore(
    store: Store, run: Run, tel: _Telemetry, crew: Crew
) -> tuple[float, list[tuple[float, str, str, dict[str, Any]]]]:
    """Rebuild the plant and the Monitor's state up to the run's last checkpoint.

    Returns the checkpoint's plant time and the recorded commands after it, which the loop
    re-applies to the plant at their times (the actuator is not called again).
    """
    target = run.plant_time
    commands = sorted(
        (
            (a.executed_at, a.device_id, a.command, dict(a.parameters))
            for a in store.actions(run_id=run.id)
            # "executing" (claimed, no receipt): its actuate task is issued again and the
            # Operator sends it again with the same idempotency key; not re-applied here
            if a.status == "executed" and a.executed_at is not None
        ),
        key=lambda c: c[0],
    )
    monitor = crew.monitor
    pending = list(commands)
    while tel.t < target - 1e-9:
        batches = tel.step()
        if batches is None:
            break
        _apply_due(tel, pending)
        if monitor is not None:
            for b in batches:
                monitor.warm(b)
    tel.new_problems()  # dead-lettered by the run before it stopped
    log.info("resumed", run=run.id, plant_time=tel.t, commands=len(commands))
    return tel.t, pending


def _apply_due(tel: _Telemetry, pending: list[tuple[float, str, str, dict[str, Any]]]) -> None:
    """Apply recorded commands whose time has come (as they were applied when recorded)."""
    while pending and pending[0][0] <= tel.t + 1e-9:
        _, device, command, params = pending.pop(0)
        tel.plant.apply(device, command, params)


async def _loop(
    scenario: Scenario,
    run: Run,
    tel: _Telemetry,
    clock: SimClock,
    bus: Bus,
    crew: Crew,
    human: ScriptedHuman,
    store: Store,
    observer: RunObserver | None,
    start_t: float,
    replayed: list[tuple[float, str, str, dict[str, Any]]],
    stop_after_s: float | None,
    on_checkpoint: Callable[[float], None] | None,
    pacer: Pacer | None,
    people: Callable[[float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> bool:
    """Step the run until its end; True when ``stop`` ended it first."""
    last_checkpoint = start_t
    end = scenario.duration_s if stop_after_s is None else min(stop_after_s, scenario.duration_s)
    while tel.t < end - 1e-9:
        if stop is not None and stop.is_set():
            log.info("run stopped", run=run.id, plant_time=clock.t)
            return True
        batches = tel.step()
        if batches is None:
            await _dead_letter_rows(tel, bus, run.id, clock.now())  # bad rows at the file's end
            await bus.quiesce()
            tel.check_replayed()
            break
        _apply_due(tel, replayed)
        if pacer is not None:
            await pacer.wait_for(clock.t)
        now = clock.now()
        await _dead_letter_rows(tel, bus, run.id, now)
        for batch in batches:
            await bus.publish(
                Message.new(
                    batch,
                    source="plant",
                    subject=Subjects.telemetry(batch.device_id),
                    time=now,
                    run_id=run.id,
                    correlation_id=run.id,
                )
            )
        await bus.quiesce()
        if people is not None:
            people(clock.t)
        human.act(clock.t)
        await crew.tick()
        await bus.quiesce()
        if observer is not None:
            monitor = crew.monitor
            observer.on_step(clock.t, batches, dict(monitor.last_score) if monitor else {})
        if clock.t - last_checkpoint >= CHECKPOINT_EVERY_S:
            store.update_run(run.id, plant_time=clock.t)
            last_checkpoint = clock.t
            if on_checkpoint is not None:
                on_checkpoint(clock.t)
    return False


async def _dead_letter_rows(tel: _Telemetry, bus: Bus, run_id: str, now: datetime) -> None:
    """Publish each CSV row skipped as bad since the last call on ``crew.dlq``, with its
    reason (file, line, row, column) and its text: a bad row is kept, never just dropped."""
    for problem in tel.new_problems():
        log.warning("csv row dead-lettered", run=run_id, problem=str(problem))
        device = tel.device_of(problem)
        await bus.publish(
            dead_letter(
                subject=Subjects.telemetry(device),
                reason=f"bad CSV row: {problem}",
                raw=problem.raw,
                attempts=0,
                quarantined=True,
                source="plant",
                run_id=run_id,
                correlation_id=run_id,
                time=now,
            )
        )


def _incident_json(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "device_id": i.device_id,
        "status": i.status,
        "outcome": i.outcome,
        "root_cause": i.root_cause,
        "confidence": i.confidence,
        "detected_at": i.detected_at,
        "resolved_at": i.resolved_at,
        "escalation_reason": i.escalation_reason,
        "degraded": i.data.get("degraded", []),
        "actions": [],
    }


def _finish(
    store: Store, scenario: Scenario, run: Run, t: float, wall: float, *, stopped: bool = False
) -> RunResult:
    incidents = store.incidents(run.id)
    actions = store.actions(run_id=run.id)
    approvals = store.approvals(run_id=run.id)
    results = check(scenario, incidents, actions, approvals, plant_t=t)
    passed = all(r.passed for r in results)
    out = []
    for inc in incidents:
        j = _incident_json(inc)
        for a in actions:
            if a.incident_id != inc.id:
                continue
            appr = next((p for p in approvals if p.action_id == a.id), None)
            j["actions"].append(
                {
                    "id": a.id,
                    "device_id": a.device_id,
                    "command": a.command,
                    "parameters": a.parameters,
                    "status": a.status,
                    "hazard_class": a.hazard_class,
                    "rule_ids": a.rule_ids,
                    "executed_at": a.executed_at,
                    "approved_by": [
                        d["approver"] for d in (appr.decisions if appr else []) if d.get("approved")
                    ],
                }
            )
        out.append(j)
    complete = not stopped and (t >= scenario.duration_s - 1e-9 or scenario.telemetry is not None)
    status = ("passed" if passed else "failed") if complete else "interrupted"
    store.update_run(
        run.id,
        status=status,
        plant_time=t,
        finished_at=datetime.now(UTC),
        summary={"passed": passed, "incidents": len(incidents)},
    )
    return RunResult(run.id, scenario.name, passed, out, results, t, wall, status=status)


__all__ = ["RunObserver", "RunResult", "assets_of", "load_scenario", "run_scenario"]
