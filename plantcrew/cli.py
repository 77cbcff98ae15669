"""The ``plantcrew`` command (typer). Exit codes: 0 success (a scenario's expectations held),
1 an expectation failed, 2 bad input (scenario file, options, config), 3 a runtime failure
(bus or database unreachable), 130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM (a run is
then recorded ``interrupted`` at the end of its step and ``--resume`` continues it; see
:mod:`plantcrew.stopping`)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape
from rich.text import Text

from plantcrew.errors import ConfigError, NotFoundError, PlantcrewError, ScenarioError
from plantcrew.stopping import (
    exit_stopped,
    signal_exit_code,
    sigterm_as_ctrl_c,
    stop_on_signals,
)
from plantcrew.terminal import command_group, err, fail, out, plain, print_error

if TYPE_CHECKING:
    from plantcrew.scenarios.runner import RunResult

app = command_group(
    help="plantcrew: a crew of role agents that responds to plant anomalies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
approvals_app = command_group(
    help="Pending and past approvals; approve or reject as a person.", no_args_is_help=True
)
audit_app = command_group(help="The hash-chained audit log.", no_args_is_help=True)
eval_app = command_group(
    help="Score detection and diagnosis on benchmark data.", no_args_is_help=True
)
app.add_typer(approvals_app, name="approvals")
app.add_typer(audit_app, name="audit")
app.add_typer(eval_app, name="eval")

# commands whose faces live in their own modules (one concept each)
from plantcrew.cli_models import costs, models_app  # noqa: E402
from plantcrew.cli_processes import agents, coordinator, up, worker  # noqa: E402
from plantcrew.cli_replay import diff, replay, rerun  # noqa: E402
from plantcrew.cli_serve import serve, tokens_app  # noqa: E402

app.command()(replay)
app.command()(rerun)
app.command()(diff)
app.command()(costs)
app.add_typer(models_app, name="models")
app.command()(coordinator)
app.command()(worker)
app.command()(up)
app.command()(agents)
app.command()(serve)
app.add_typer(tokens_app, name="tokens")

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="database URL (default: $PLANTCREW_DB_URL or sqlite:///plantcrew.db)"
    ),
]


class CrewWhere(StrEnum):
    """Where a run's crew (Coordinator and agents) lives: ``plantcrew run --crew``."""

    LOCAL = "local"
    REMOTE = "remote"


@app.callback()
def _setup() -> None:
    """Logs go to standard error (stdout carries --json output), at PLANTCREW_LOG_LEVEL."""
    from plantcrew.logs import configure
    from plantcrew.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, json=settings.log_json)


def _db(url: str | None) -> str:
    from plantcrew.settings import get_settings

    return url or get_settings().db_url


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus", help="bus URL (default: memory://; with --resume, the bus the run ran on)"
        ),
    ] = None,
    db: DbOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="continue RUN_ID from its last checkpoint (same --db)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed", min=0.1, help="plant seconds per wall second (default: as fast as possible)"
        ),
    ] = None,
    crew: Annotated[
        CrewWhere,
        typer.Option(
            "--crew",
            help="local: the crew runs in this process; remote: the Coordinator and agents "
            "are other processes on the --bus broker (plantcrew coordinator, worker, up)",
        ),
    ] = CrewWhere.LOCAL,
) -> None:
    """Run a scenario: a simulated plant, faults, the crew; check its expectations."""
    from plantcrew.scenarios.schema import load_scenario

    try:
        if resume is None:
            spec = load_scenario(scenario)
        else:
            from plantcrew.store import Store

            spec = load_scenario(Store(_db(db), existing=True).get_run(resume).scenario_path)
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    except NotFoundError as exc:
        raise fail(2, str(exc)) from None
    from plantcrew.render import LiveRunView, print_summary
    from plantcrew.scenarios.runner import run_scenario
    from plantcrew.store import Run

    def named(run: Run, resumed: bool) -> None:
        # first, so that a run killed before its summary can still be resumed by its id
        again = "resumed" if resumed else f"after a stop, continue it with --resume {run.id}"
        err.print(f"run {run.id} ({run.scenario}): {again}", markup=False, highlight=False)

    signalled: list[int] = []

    async def until_stopped(observer: LiveRunView | None) -> RunResult:
        # SIGTERM or Ctrl-C: the run ends at the end of its step, recorded interrupted
        stop = stop_on_signals()
        try:
            return await run_scenario(
                scenario,
                bus_url=bus if bus is not None else ("" if resume else "memory://"),
                db_url=_db(db),
                seed=seed,
                resume=resume,
                pace=speed,
                observer=observer,
                crew=crew.value,
                on_run=named,
                stop=stop,
            )
        finally:
            if stop.signal is not None:
                signalled.append(stop.signal)

    def go(observer: LiveRunView | None) -> RunResult:
        return asyncio.run(until_stopped(observer))

    try:
        if as_json:
            result = go(None)
        else:
            with LiveRunView(out, spec.name, spec.duration_s) as view:
                result = go(view)
    except (ConfigError, ScenarioError) as exc:
        raise fail(2, str(exc)) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    if result.status == "interrupted" and signalled:
        _interrupted(result, scenario, db, spec.duration_s, signalled[0], as_json)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_summary(out, result)
        for e in result.expectations:
            if not e.passed:
                err.print(
                    f"[red]expectation {e.name} failed:[/] {escape(e.detail)}", highlight=False
                )
    raise typer.Exit(0 if result.passed else 1)


def _interrupted(
    result: RunResult, scenario: Path, db: str | None, duration_s: float, sig: int, as_json: bool
) -> NoReturn:
    """A run a signal ended before its last step: say how to resume it, exit 128 + signal."""
    from plantcrew.settings import redacted_url

    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    again = f"plantcrew run {scenario} --resume {result.run_id}"
    if db is not None:
        again += f" --db {redacted_url(db)}"
    err.print(
        f"run {result.run_id} interrupted by {signal.Signals(sig).name} at plant time "
        f"{result.plant_seconds:g} s of {duration_s:g} s, {len(result.incidents)} incident(s) "
        f"so far; continue it with: {again}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    exit_stopped(signal_exit_code(sig))


@approvals_app.command("list")
def approvals_list(
    db: DbOpt = None,
    status: Annotated[str | None, typer.Option(help="pending|approved|rejected|expired")] = None,
) -> None:
    """List approvals (all, or with a status)."""
    from rich.table import Table

    from plantcrew.store import Store

    try:
        store = Store(_db(db), existing=True)
    except NotFoundError as exc:
        raise fail(2, str(exc)) from None
    tbl = Table()
    for col in ("id", "incident", "status", "class", "needs", "roles", "decisions"):
        tbl.add_column(col)
    for a in store.approvals(status=status):
        tbl.add_row(
            plain(a.id),
            plain(a.incident_id),
            plain(a.status),
            str(a.hazard_class),
            str(a.approvers_required),
            plain(", ".join(a.approver_roles)),
            plain(
                "; ".join(
                    f"{d['approver']}: {'yes' if d['approved'] else 'no'}" for d in a.decisions
                )
            ),
        )
    out.print(tbl)


@approvals_app.command("show")
def approvals_show(approval_id: str, db: DbOpt = None) -> None:
    """One approval: the action it allows, who may approve, the decisions so far."""
    from plantcrew.store import Store

    try:
        store = Store(_db(db), existing=True)
        a = store.get_approval(approval_id)
    except PlantcrewError as exc:
        raise fail(2, str(exc)) from None
    action = next(
        (x for x in store.actions(incident_id=a.incident_id) if x.id == a.action_id), None
    )
    out.print(Text.assemble((a.id, "bold"), f" ({a.status}) for incident {a.incident_id}"))
    if action is not None:
        out.print(
            f"action: {action.command} on {action.device_id} {action.parameters} "
            f"(hazard class {a.hazard_class}; rules {', '.join(action.rule_ids)})",
            markup=False,
        )
    out.print(
        f"needs {a.approvers_required} approver(s) with role: "
        f"{', '.join(a.approver_roles) or '-'}; deadline at plant {a.deadline_at}",
        markup=False,
    )
    for d in a.decisions:
        out.print(
            f"  {d['approver']} ({d['role']}): {'approved' if d['approved'] else 'refused'}"
            f" — {d.get('reason', '')}",
            markup=False,
        )


def _vote(
    approval_id: str, approver: str, role: str, reason: str, db: str | None, approved: bool
) -> None:
    from plantcrew.errors import VoteRefused
    from plantcrew.store import Store
    from plantcrew.store.votes import submit_vote

    try:
        submit_vote(
            Store(_db(db), existing=True),
            approval_id,
            approver=approver,
            role=role,
            approved=approved,
            reason=reason,
        )
    except (NotFoundError, VoteRefused) as exc:
        raise fail(2, str(exc)) from None
    out.print(
        f"{'approval' if approved else 'refusal'} of {approval_id} by {approver} ({role}) "
        "recorded; the Coordinator applies it at its next tick",
        markup=False,
    )


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    approver: Annotated[str, typer.Option("--as", help="your name")],
    role: Annotated[str, typer.Option("--role", help="your role, e.g. shift_supervisor")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    db: DbOpt = None,
) -> None:
    """Approve an action as a person (the role must be one the approval allows)."""
    _vote(approval_id, approver, role, reason, db, True)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: str,
    approver: Annotated[str, typer.Option("--as", help="your name")],
    role: Annotated[str, typer.Option("--role", help="your role")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    db: DbOpt = None,
) -> None:
    """Refuse an action as a person: the incident escalates, nothing actuates."""
    _vote(approval_id, approver, role, reason, db, False)


@audit_app.command("verify")
def audit_verify(db: DbOpt = None) -> None:
    """Check the audit log's hash chain; name every edited, deleted or reordered entry."""
    from plantcrew.store import Store

    try:
        breaks = Store(_db(db), existing=True).verify_audit()
    except NotFoundError as exc:
        raise fail(2, str(exc)) from None
    if not breaks:
        out.print("[green]audit log intact[/]")
        return
    for b in breaks:
        err.print(Text.assemble((f"entry {b.seq}:", "red"), " ", b.problem))
    raise typer.Exit(1)


@eval_app.command("skab")
def eval_skab(
    # exists=True: a wrong path is told at once, not after seconds of imports
    paths: Annotated[
        list[Path], typer.Argument(help="SKAB CSV files or folders of them", exists=True)
    ],
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="write per-file predictions, incidents and metrics here"),
    ] = None,
    memory_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--memory-from", help="load confirmed incidents from these files first", exists=True
        ),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            "--truth",
            help="file → root cause: CSV 'file,root_cause', or JSON/YAML, for files not named "
            "as SKAB names them",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    leave_one_out: Annotated[
        bool, typer.Option("--leave-one-out", help="memory from every other file, for each file")
    ] = False,
    monitor_only: Annotated[
        bool,
        typer.Option(
            "--monitor-only",
            help="run the Monitor and the root-cause ranking alone, not the whole crew (faster)",
        ),
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, help="files run at once, each in its own process")
    ] = 2,
) -> None:
    """F1, FAR and MAR over the test rows (SKAB's protocol), detection delay, incidents and
    root cause per file and overall. Each file is replayed through the whole crew at
    accelerated time (a scenario per file, in-process bus, throwaway SQLite database)."""
    import time

    from plantcrew.logs import at_least
    from plantcrew.scenarios.skab_crew import run_skab_file_crew
    from plantcrew.scenarios.skab_eval import evaluate_skab, render_report, run_skab_file

    # the terminal shows progress and the table: the crews' logs (here and in the worker
    # processes, which log as this one does) only from warnings up
    at_least("WARNING")
    started = time.perf_counter()

    def progress(name: str, i: int, n: int) -> None:
        took = time.perf_counter() - started
        err.print(escape(f"[{i + 1}/{n}] {name} done ({took:.0f} s)"), highlight=False)

    try:
        with sigterm_as_ctrl_c():  # workers terminated, temporary files removed; exit 143
            report = evaluate_skab(
                paths,
                memory_from=memory_from or (),
                truth=truth,
                json_out=json_out,
                progress=progress,
                leave_one_out=leave_one_out,
                pipeline=run_skab_file if monitor_only else run_skab_file_crew,
                jobs=jobs,
                warn=lambda text: err.print(
                    f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True
                ),
            )
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    render_report(report, out)
    if json_out is not None:
        err.print(f"wrote {json_out}", markup=False)


@app.command()
def detect(
    data_dir: Annotated[Path, typer.Argument(help="NAB data folder (category/file.csv)")],
    out_dir: Annotated[Path, typer.Option("--out", help="NAB results folder to write")],
    fmt: Annotated[str, typer.Option("--format", help="input/output format")] = "nab",
    detector: Annotated[
        str,
        typer.Option(
            "--detector",
            help="name of the results: folder and file prefix (RESULTS_DIR/NAME/<category>/"
            "NAME_<file>.csv; no underscore); the detector is always plantcrew's Monitor",
        ),
    ] = "plantcrew",
) -> None:
    """Run the Monitor's detector on univariate series and write NAB's results format."""
    from plantcrew.detect import detect_nab

    if fmt != "nab":
        raise fail(2, f"--format {fmt!r}: only 'nab' is supported")
    try:
        written = detect_nab(data_dir, out_dir, detector=detector)
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    out.print(f"wrote {len(written)} result files under {out_dir}", markup=False)


@app.command()
def feedback(
    incident_id: Annotated[str, typer.Argument(help="the incident to correct")],
    root_cause: Annotated[str, typer.Option("--root-cause", help="the right root cause")],
    by: Annotated[str, typer.Option("--as", help="who corrects it")] = "operator",
    note: Annotated[str, typer.Option("--note")] = "",
    db: DbOpt = None,
) -> None:
    """Correct an incident's root cause; remembered, it changes later diagnoses.

    Later diagnoses of similar deviations recall the correction as feedback."""
    from datetime import UTC, datetime

    from plantcrew.detect import default_signatures_path, load_signatures, signature_of
    from plantcrew.store import Lesson, Store

    try:
        store = Store(_db(db), existing=True)
        inc = store.get_incident(incident_id)
        vocabulary = set(load_signatures(default_signatures_path()).signatures) | {"unknown"}
    except PlantcrewError as exc:
        raise fail(2, str(exc)) from None
    if root_cause not in vocabulary:
        raise fail(
            2,
            f"--root-cause {root_cause!r} is not a known root cause: "
            f"{', '.join(sorted(vocabulary))}",
        )
    signature = signature_of(inc.anomaly.get("deviations", []))
    if not signature:
        raise fail(
            2,
            f"incident {incident_id} has no deviation signature to learn from "
            "(stuck sensors are left out: they say nothing of the process)",
        )
    store.add_lesson(
        Lesson(
            incident_id=inc.id,
            run_id=inc.run_id,
            root_cause=root_cause,
            signature=signature,
            source="feedback",
            note=note or f"by {by}",
        )
    )
    store.audit(
        time=datetime.now(UTC),
        actor=by,
        kind="diagnosis.corrected",
        run_id=inc.run_id,
        incident_id=inc.id,
        data={"was": inc.root_cause, "now": root_cause, "note": note},
    )
    out.print(
        f"{incident_id}: {inc.root_cause} → {root_cause} remembered as feedback", markup=False
    )


def main() -> None:
    """The ``plantcrew`` command, as the console script runs it (``plantcrew/__main__.py``,
    which handles Ctrl-C and SIGTERM). A plantcrew error that a command does not handle itself
    is printed as one line, never a traceback: exit 2 for a bad configuration, 3 for anything
    else (a database or broker that cannot be reached)."""
    try:
        app()
    except PlantcrewError as exc:
        print_error(str(exc))
        sys.exit(2 if isinstance(exc, ConfigError) else 3)


if __name__ == "__main__":
    from plantcrew.__main__ import interruptible

    interruptible(main)
