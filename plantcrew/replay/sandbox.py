"""Re-executing a recorded scenario run in a sandbox: its own config, database and bus.

:func:`reexecute` runs a recorded run's scenario again, with the recorded seed and the
scenario as it was recorded (``run.config["scenario"]``, its relative paths made absolute
from the recorded scenario path), through the current code, into a scratch SQLite database
in ``workdir``:

- config: a copy of the config folder the run used (``config.loaded`` in its audit log) or
  the one given, with ``models.yaml`` rewritten so that deployments answer from the record
  (:mod:`plantcrew.replay.recorded`) and, for a fork, the changes applied (a role's model
  group in ``crew.yaml``, another ``playbooks.yaml``, another policies file);
- memory: the lessons the run's first diagnosis was given (the database's memory when the
  run began) and the model spend its budgets had been measured against before its own calls
  are put in the scratch database, so recall and budgets work as they did;
- people: the votes people cast on the run's approvals (``approval.decided`` in its log,
  e.g. with ``plantcrew approvals approve``) are cast again, each just before the tick of the
  plant time the run applied it at; the scenario's scripted human casts its own again;
- time: a run that did not finish is re-executed up to the plant time it had reached.

The playbook model is deterministic code under test: in ``verify`` mode its deployments stay
live unless ``record_playbook``; in ``fork`` mode every deployment is wrapped, recorded before
the fork point and live after it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from plantcrew.errors import NotFoundError
from plantcrew.replay.canon import RECORDED_PREFIX, Canon
from plantcrew.replay.errors import ReplayError
from plantcrew.replay.recorded import ReplaySession, Upstream, answers_of, open_session
from plantcrew.replay.timeline import Timeline
from plantcrew.settings import get_settings
from plantcrew.store import Lesson, ModelCall, Store, add_model_calls

Mode = Literal["verify", "fork"]
FINISHED = ("passed", "failed", "completed")
NEVER_COOL_DOWN = 1_000_000
SEED_RUN = "replay-seed"
# pacing and circuit-breaker settings a deployment served from the record does without
UNPACED = ("api_key_env", "rpm", "tpm", "max_retries", "allowed_fails", "cooldown_s")


@dataclass
class Changes:
    """What a fork changes: role → model group, a policies file, a playbooks file, and
    role → system prompt text (applied to the role's live model calls)."""

    model_groups: dict[str, str] = field(default_factory=dict)
    policies: Path | None = None
    playbooks: Path | None = None
    prompts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_groups": dict(self.model_groups),
            "policies": str(self.policies) if self.policies else None,
            "playbooks": str(self.playbooks) if self.playbooks else None,
            "prompts": dict(self.prompts),
        }


@dataclass
class Reexecution:
    """A finished re-execution: the scratch database and run, and how calls were answered.

    ``served``/``live``/``refused`` count model call attempts answered from the record,
    answered by a real model, and failed on purpose (the record named another deployment);
    ``unrecorded`` lists calls the record had no answer for and ``unused`` recorded calls
    of wrapped deployments no call asked for; ``stop_at`` is the plant time
    the run was cut at (None: its full duration); ``wall_s`` the wall seconds it took.
    """

    db_url: str
    run_id: str
    passed: bool
    served: int
    live: int
    refused: int
    unrecorded: list[str]
    unused: list[str]
    stop_at: float | None
    wall_s: float
    config_dir: Path


def recorded_config_dir(timeline: Timeline) -> Path:
    """The config folder the run was started with, if it still exists, else the current one."""
    for entry in timeline.audit:
        if entry.kind == "config.loaded" and entry.data.get("config_dir"):
            path = Path(str(entry.data["config_dir"]))
            if path.is_dir():
                return path
    return get_settings().config_dir


def _abs(raw: str, scenario_path: str) -> str:
    from plantcrew.scenarios.schema import resolve_data_path

    return str(resolve_data_path(raw, scenario_path))


def recorded_scenario(timeline: Timeline, policies: Path | None = None) -> dict[str, Any]:
    """The scenario as the run recorded it, with its file paths absolute.

    Raises ReplayError for a run that is not a scenario run."""
    run = timeline.run
    data = run.config.get("scenario") if isinstance(run.config, dict) else None
    if not isinstance(data, dict):
        if not run.scenario_path or not Path(run.scenario_path).is_file():
            raise ReplayError(
                f"run {run.id} has no recorded scenario (live operation cannot be re-executed)"
            )
        from plantcrew.scenarios.schema import load_scenario

        data = load_scenario(run.scenario_path).model_dump(mode="json")
    data = json.loads(json.dumps(data))
    if data.get("policies"):
        data["policies"] = _abs(data["policies"], run.scenario_path)
    if policies is not None:
        data["policies"] = str(policies.resolve())
    tel = data.get("telemetry")
    if isinstance(tel, dict) and tel.get("path"):
        tel["path"] = _abs(tel["path"], run.scenario_path)
    return data


def starting_lessons(timeline: Timeline) -> list[dict[str, Any]]:
    """The memory the run started with: the lessons given to its first diagnosis task."""
    for s in timeline.steps:
        p = s.payload
        if s.type == "task.assigned" and p.get("capability") == "diagnose":
            return [dict(x) for x in (p.get("input") or {}).get("lessons", [])]
    return []


def starting_spend(timeline: Timeline) -> list[ModelCall]:
    """Model-call spend the run's budgets were measured against before its own calls.

    The Coordinator sends each task the spend of its budget scopes (``input["budget"]``);
    the first task carrying the ``day`` scope, and the first carrying each ``agent <role>
    today`` scope, were sent before any call of theirs in this run, so what they say was
    spent came from earlier runs. Returns ``model_call`` rows (run ``replay-seed``) that add
    up to those amounts on that day: one per role, one for the rest of the day.
    """
    day_spent: float | None = None
    roles: dict[str, float] = {}
    day = ""
    for step in timeline.steps:
        budget = (
            (step.payload.get("input") or {}).get("budget")
            if (step.type == "task.assigned")
            else None
        )
        if not isinstance(budget, dict):
            continue
        for scope in budget.get("scopes") or []:
            name, spent = str(scope.get("scope", "")), float(scope.get("spent_usd") or 0.0)
            if name == "day" and day_spent is None:
                day_spent, day = spent, step.time[:10]
            elif name.startswith("agent ") and name.endswith(" today"):
                roles.setdefault(name[len("agent ") : -len(" today")], spent)
                day = day or step.time[:10]
    seed = [
        ModelCall(run_id=SEED_RUN, agent=role, day=day, cost_usd=spent, model="seed")
        for role, spent in roles.items()
        if spent > 0
    ]
    rest = (day_spent or 0.0) - sum(roles.values())
    if rest > 0:
        seed.append(
            ModelCall(run_id=SEED_RUN, agent=SEED_RUN, day=day, cost_usd=rest, model="seed")
        )
    return seed


def seed_memory(store: Store, timeline: Timeline) -> None:
    """Put in ``store`` the memory the run started with: its lessons
    (:func:`starting_lessons`) and its budgets' earlier spend (:func:`starting_spend`)."""
    with store.tx() as s:
        for x in starting_lessons(timeline):
            s.add(
                Lesson(
                    root_cause=str(x.get("root_cause", "unknown")),
                    signature=dict(x.get("signature") or {}),
                    weight=float(x.get("weight", 1.0)),
                    source=str(x.get("source", "confirmed")),
                )
            )
        add_model_calls(s, starting_spend(timeline))


@dataclass(frozen=True)
class RecordedVote:
    """A person's vote as the run applied it: at ``plant_time``, on ``approval`` (its id in
    canonical form, :class:`~plantcrew.replay.canon.Canon`)."""

    plant_time: float
    approval: str
    approver: str
    role: str
    approved: bool
    reason: str


def recorded_votes(
    timeline: Timeline, scenario: dict[str, Any], before_seq: int | None = None
) -> list[RecordedVote]:
    """The votes of people in the run's log (before ``before_seq``), in order, except those
    the scenario's scripted human casts (same approver, role, decision and reason)."""
    scripted = {
        (
            str(r.get("approver")),
            str(r.get("role")),
            r.get("decision") == "approve",
            str(r.get("reason") or ""),
        )
        for r in scenario.get("human") or []
        if r.get("decision") != "ignore"
    }
    canon = Canon(timeline.run.id)
    out = []
    for s in timeline.steps:
        if s.type != "approval.decided" or not s.source.startswith("person:"):
            continue
        if before_seq is not None and s.seq >= before_seq:
            break
        _, role, approver = s.source.split(":", 2)
        p = s.payload
        vote = RecordedVote(
            s.plant_time,
            canon.text(str(p.get("approval_id"))),
            approver,
            role,
            bool(p.get("approved")),
            str(p.get("reason") or ""),
        )
        if (vote.approver, vote.role, vote.approved, vote.reason) not in scripted:
            out.append(vote)
    return out


class RecordedPeople:
    """Casts :func:`recorded_votes` into ``store`` (the re-execution's) when their plant time
    comes: the ``people`` hook of :func:`~plantcrew.scenarios.runner.run_scenario`. A vote on
    an approval the re-execution does not have (yet) waits for it."""

    def __init__(self, store: Store, votes: list[RecordedVote]) -> None:
        self.store, self.pending = store, list(votes)

    def __call__(self, now: float) -> None:
        if not self.pending or self.pending[0].plant_time > now + 1e-9:
            return
        suffix = self.store.runs(limit=1)[0].id[-8:]
        for vote in [v for v in self.pending if v.plant_time <= now + 1e-9]:
            try:
                self.store.cast_vote(
                    vote.approval.replace("<run>", suffix),
                    approver=vote.approver,
                    role=vote.role,
                    approved=vote.approved,
                    reason=vote.reason,
                )
            except NotFoundError:
                continue
            self.pending.remove(vote)


def recorded_deployments(timeline: Timeline) -> set[str]:
    """Deployments the run's model calls were served by or failed on."""
    from plantcrew.replay.canon import failed_deployments

    names: set[str] = set()
    for s in timeline.steps:
        for c in s.payload.get("model_calls") or []:
            if c.get("deployment") and c["deployment"] != "none":
                names.add(str(c["deployment"]))
            names.update(failed_deployments(c.get("error")))
    return names


def _price_of(model: str) -> dict[str, float] | None:
    """litellm's price of ``model`` in USD per million tokens, or None when it has none."""
    import litellm

    try:
        info = litellm.get_model_info(model)
    except Exception:  # litellm raises for a model it does not know
        return None
    inp, outp = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if not isinstance(inp, int | float) or not isinstance(outp, int | float):
        return None
    return {"input_per_mtok": float(inp) * 1e6, "output_per_mtok": float(outp) * 1e6}


def rewrite_models(
    source: Path,
    target: Path,
    session: ReplaySession,
    *,
    used: set[str],
    mode: Mode,
    record_playbook: bool,
    playbooks_path: Path,
) -> None:
    """Write ``target`` (models.yaml) from ``source`` for a re-execution (see module doc).

    Active deployments: those the record used, the enabled playbooks and (fork) those active
    now. Each one answered from the record gets the session's ``api_base`` (and a hosted one
    the model ``recorded/<model>``, and its price from litellm's list when it sets none, so
    the cost of a served answer is counted as before); its real model is kept as the
    session's :class:`Upstream`. Pacing, retries and circuit breakers are off; the playbook
    last resort is written out explicitly. Fills ``session.upstream`` and
    ``session.group_deployments`` (a group's own deployments and the models of its
    ``router.fallbacks`` groups its chain takes in).
    """
    from plantcrew.llm.config import DEFAULT_PLAYBOOK_MODEL, Deployment, load_models_config

    cfg = load_models_config(source)
    groups: dict[str, Any] = {}
    models_on: dict[str, set[str]] = {}
    for gname, group in cfg.groups.items():
        now = {d.name for d in cfg.active(gname)} if mode == "fork" else set()
        entries: list[tuple[Deployment, bool]] = []
        for i, dep in enumerate(group.deployments):
            filled = dep.model_copy(
                update={"name": dep.name or f"{gname}-{i}", "order": dep.order or i + 1}
            )
            on = filled.name in used or filled.name in now or (dep.is_playbook and dep.enabled)
            entries.append((filled, on))
        active = sorted((d for d, on in entries if on), key=lambda d: d.order or 0)
        if cfg.router.playbook_last_resort and not (active and active[-1].is_playbook):
            last = max((d.order or 0 for d in active), default=0) + 1
            auto = Deployment(model=DEFAULT_PLAYBOOK_MODEL, name=f"{gname}-playbook", order=last)
            entries.append((auto, True))
        out: list[dict[str, Any]] = []
        for dep, on in entries:
            assert dep.name is not None
            if not on:
                out.append({"model": dep.model, "name": dep.name, "enabled": False})
                continue
            entry = dep.model_dump(mode="json", exclude_none=True)
            if dep.is_playbook and not (record_playbook or mode == "fork"):
                out.append(entry)  # the playbook runs live, as code under test
                continue
            base = dep.api_base or (str(playbooks_path) if dep.is_playbook else None)
            session.upstream[dep.name] = Upstream(
                model=dep.model,
                api_base=base,
                api_key_env=dep.api_key_env,
                timeout_s=dep.timeout_s,
                extra=dict(dep.extra),
            )
            for key in UNPACED:
                entry.pop(key, None)
            entry.update(enabled=True, api_base=session.api_base)
            if not dep.is_playbook:
                entry["model"] = f"{RECORDED_PREFIX}{dep.model}"
                price = dep.price.model_dump() if dep.price else _price_of(dep.model)
                if price:
                    entry["price"] = price
            out.append(entry)
        session.group_deployments[gname] = {str(d.name) for d, on in entries if on}
        models_on[gname] = {str(d.name) for d, on in entries if on and not d.is_playbook}
        groups[gname] = {"description": group.description, "deployments": out}
    for gname in cfg.groups:  # a group's chain takes in its fallback groups' models
        for borrowed in cfg.fallback_groups(gname):
            session.group_deployments[gname] |= models_on[borrowed]
    session.upstream[""] = Upstream(model=DEFAULT_PLAYBOOK_MODEL, api_base=str(playbooks_path))
    router = cfg.router.model_dump(mode="json")
    router.update(
        num_retries=0,
        retry_after_s=0,
        allowed_fails=NEVER_COOL_DOWN,
        cooldown_time_s=0,
        playbook_last_resort=False,
    )
    data = cfg.model_dump(mode="json", exclude={"source"})
    data.update(groups=groups, router=router)
    target.write_text(yaml.safe_dump(data, sort_keys=False))


def _apply_crew_changes(path: Path, changes: Changes, models: Path) -> None:
    from plantcrew.crews.config import ROLES
    from plantcrew.llm.config import load_models_config

    if not changes.model_groups:
        return
    groups = load_models_config(models).groups
    data = yaml.safe_load(path.read_text()) or {}
    roles = data.setdefault("roles", {})
    for role, group in changes.model_groups.items():
        if role not in ROLES:
            raise ReplayError(f"unknown role {role!r}; roles are {list(ROLES)}")
        if group not in groups:
            raise ReplayError(f"unknown model group {group!r}; groups are {sorted(groups)}")
        roles.setdefault(role, {})
        roles[role] = {**(roles[role] or {}), "model_group": group}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _check_prompt_roles(changes: Changes) -> None:
    from plantcrew.crews.config import ROLES

    for role in changes.prompts:
        if role not in ROLES:
            raise ReplayError(f"unknown role {role!r} for a prompt; roles are {list(ROLES)}")


def stop_point(timeline: Timeline) -> float | None:
    """Where a re-execution stops: None for a finished run, else its last plant time."""
    run = timeline.run
    if run.status in FINISHED or run.plant_time <= 0:
        return None
    return run.plant_time


async def reexecute(
    timeline: Timeline,
    workdir: Path,
    *,
    mode: Mode = "verify",
    config_dir: Path | None = None,
    record_playbook: bool = False,
    live_task: Callable[[str], bool] | None = None,
    changes: Changes | None = None,
    votes_before_seq: int | None = None,
) -> Reexecution:
    """Run ``timeline``'s scenario again in ``workdir`` (see module doc).

    ``live_task`` (fork mode) tells which canonical task ids get live model answers;
    ``votes_before_seq`` (a fork's message) leaves out people's votes from there on.
    Raises ReplayError when the run cannot be re-executed, ConfigError for a bad config or
    change, and whatever ``run_scenario`` raises when the run cannot start.
    """
    from plantcrew.scenarios.runner import run_scenario

    changes = changes or Changes()
    _check_prompt_roles(changes)
    source = config_dir or recorded_config_dir(timeline)
    if not source.is_dir():
        raise ReplayError(f"config folder {source} not found")
    cfg_dir = workdir / "config"
    if cfg_dir.exists():
        shutil.rmtree(cfg_dir)
    shutil.copytree(source, cfg_dir)
    if changes.playbooks is not None:
        shutil.copyfile(changes.playbooks, cfg_dir / "playbooks.yaml")
    _apply_crew_changes(cfg_dir / "crew.yaml", changes, source / "models.yaml")

    db_path = workdir / "replay.db"
    for leftover in workdir.glob("replay.db*"):
        leftover.unlink()
    db_url = f"sqlite:///{db_path}"
    store = Store(db_url)
    seed_memory(store, timeline)

    def new_run_id() -> str:
        runs = store.runs(limit=1)
        if not runs:
            raise ReplayError("the re-executed run has not started")
        return runs[0].id

    records = [(s.seq, s.source, s.body) for s in timeline.steps]
    session = ReplaySession(
        answers_of(records, timeline.run.id),
        run_id_of_new=new_run_id,
        run_id_of_record=timeline.run.id,
        live_task=live_task if mode == "fork" else None,
        prompts=changes.prompts,
    )
    rewrite_models(
        source / "models.yaml",
        cfg_dir / "models.yaml",
        session,
        used=recorded_deployments(timeline),
        mode=mode,
        record_playbook=record_playbook,
        playbooks_path=cfg_dir / "playbooks.yaml",
    )
    scenario = recorded_scenario(timeline, changes.policies)
    scenario_file = workdir / "scenario.yaml"
    scenario_file.write_text(yaml.safe_dump(scenario, sort_keys=False))
    people = RecordedPeople(store, recorded_votes(timeline, scenario, votes_before_seq))
    stop_at = stop_point(timeline)
    start = time.perf_counter()
    with open_session(session):
        result = await run_scenario(
            scenario_file,
            bus_url=f"memory://replay-{session.id}",
            db_url=db_url,
            seed=timeline.run.seed,
            config_dir=cfg_dir,
            stop_after_s=stop_at,
            people=people,
        )
    store.dispose()
    return Reexecution(
        db_url=db_url,
        run_id=result.run_id,
        passed=result.passed,
        served=session.tally.served,
        live=session.tally.live,
        refused=session.tally.refused,
        unrecorded=list(session.tally.unrecorded),
        unused=[
            f"{a.task} call {a.n + 1} ({a.agent})"
            for a in session.unused()
            if a.deployment in session.upstream or a.deployment == "none"
        ],
        stop_at=stop_at,
        wall_s=time.perf_counter() - start,
        config_dir=cfg_dir,
    )


__all__ = [
    "Changes",
    "RecordedPeople",
    "RecordedVote",
    "Reexecution",
    "recorded_config_dir",
    "recorded_deployments",
    "recorded_scenario",
    "recorded_votes",
    "reexecute",
    "rewrite_models",
    "seed_memory",
    "starting_lessons",
    "starting_spend",
    "stop_point",
]
