"""``plantcrew replay``, ``rerun`` and ``diff``: reading runs back, exactly.

The commands are plain functions for the main app (``app.command()(replay)`` ...); ``app``
here holds the three for testing (``python -m plantcrew.cli_replay``). Exit codes: 0 ok,
1 a check failed (``--verify`` found a divergence; ``diff`` found a difference), 2 bad input
(unknown run, message, incident, role or group; bad option or file), 3 runtime failure.
Imports are lazy: reading a run back does not load the model layer.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plantcrew.errors import ConfigError, NotFoundError, PlantcrewError, ScenarioError
from plantcrew.terminal import command_group, err, fail, out

if TYPE_CHECKING:
    from plantcrew.replay.timeline import Step, Timeline
    from plantcrew.store import Store


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="database URL (default: $PLANTCREW_DB_URL or sqlite:///plantcrew.db)"
    ),
]
ConfigDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        help="config folder to re-execute with (default: the one "
        "the run used, if it still exists, else the current one)",
    ),
]


class Format(StrEnum):
    table = "table"
    jsonl = "jsonl"
    html = "html"


def _db(url: str | None) -> str:
    from plantcrew.settings import get_settings

    return url or get_settings().db_url


def _bad_input(exc: Exception) -> typer.Exit:
    return fail(2, str(exc))


def replay(
    run_id: Annotated[str, typer.Argument(help="the run to read back")],
    db: DbOpt = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="only messages from this sender")
    ] = None,
    incident: Annotated[
        str | None, typer.Option("--incident", help="only this incident (id or number)")
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type", help="only this message type (repeatable; 'task.*' matches a prefix)"
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="messages as a JSON array (with --follow: one "
            "JSON object per line; with --verify: the report)",
        ),
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="print messages as a live run logs them")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="re-execute the run with the recorded model answers "
            "and check every agent sends the same messages",
        ),
    ] = False,
    record_playbook: Annotated[
        bool,
        typer.Option(
            "--record-playbook",
            help="with --verify: serve the playbook model's "
            "answers from the record too (default: it runs, as code under test)",
        ),
    ] = False,
    config_dir: ConfigDirOpt = None,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="export: jsonl or a self-contained html report"),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="file to write an export to")
    ] = None,
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--no-interactive",
            help="step through the messages (default: when stdin and stdout are a terminal)",
        ),
    ] = None,
) -> None:
    """A run read back: timeline, step-through viewer, live follow, export, exact replay."""
    from plantcrew.store import Store

    try:
        store = Store(_db(db), existing=True)
        store.get_run(run_id)
    except PlantcrewError as exc:
        raise _bad_input(exc) from None
    if verify:
        _verify(_db(db), run_id, config_dir, record_playbook, as_json)
        return
    wanted = [t for t in (types or []) if t]
    if follow:
        _follow(store, run_id, agent, incident, wanted, as_json)
        return
    from plantcrew.replay.timeline import load_timeline

    try:
        timeline = load_timeline(store, run_id)
        steps = timeline.filter(agent=agent, incident=incident, types=wanted)
    except (NotFoundError, ScenarioError) as exc:
        raise _bad_input(exc) from None
    if fmt is Format.jsonl or fmt is Format.html:
        _export(timeline, steps, fmt, out_path)
        return
    if as_json:
        print(json.dumps([{**s.body, "plant_time": s.plant_time} for s in steps], indent=1))
        return
    use_tty = (
        interactive
        if interactive is not None
        else (sys.stdin.isatty() and sys.stdout.isatty() and fmt is None)
    )
    if use_tty:
        from plantcrew.replay.viewer import Stepper
        from plantcrew.replay.viewer import interactive as run_viewer

        run_viewer(out, Stepper(timeline, steps))
        return
    from plantcrew.replay.console import timeline_table

    out.print(timeline_table(steps))
    out.print(f"{len(steps)} messages")


def _verify(
    db_url: str, run_id: str, config_dir: Path | None, record_playbook: bool, as_json: bool
) -> None:
    from plantcrew.replay.console import verify_report
    from plantcrew.replay.verify import verify_run

    try:
        report = verify_run(db_url, run_id, config_dir=config_dir, record_playbook=record_playbook)
    except (ConfigError, ScenarioError, NotFoundError) as exc:
        raise _bad_input(exc) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    if as_json:
        print(json.dumps(report.to_json(), indent=1, default=str))
    else:
        out.print(verify_report(report))
    raise typer.Exit(0 if report.ok else 1)


def _follow(
    store: Store,
    run_id: str,
    agent: str | None,
    incident: str | None,
    types: list[str],
    as_json: bool,
) -> None:
    from plantcrew.replay.console import step_line
    from plantcrew.replay.viewer import follow

    def keep(s: Step) -> bool:
        return (
            (not agent or s.source == agent)
            and (
                not incident
                or (s.incident_id or "").endswith(incident)
                or s.incident_id == incident
            )
            and (
                not types
                or any(s.type.startswith(t[:-1]) if t.endswith("*") else s.type == t for t in types)
            )
        )

    def emit(s: Step) -> None:
        if as_json:
            print(json.dumps({**s.body, "plant_time": s.plant_time}), flush=True)
        else:
            out.print(step_line(s), soft_wrap=True)

    n = follow(store, run_id, emit, keep=keep)
    if not as_json:
        out.print(f"{n} messages; run {run_id} is {store.get_run(run_id).status}", markup=False)


def _export(timeline: Timeline, steps: list[Step], fmt: Format, path: Path | None) -> None:
    from plantcrew.replay.export import to_html, to_jsonl

    if fmt is Format.jsonl:
        lines = to_jsonl(timeline, steps)
        if path is None:
            for line in lines:
                print(line)
            return
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    else:
        path = path or Path(f"{timeline.run.id}.html")
        path.write_text(to_html(timeline, steps), encoding="utf-8")
    err.print(f"wrote {path}", markup=False)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out_: dict[str, str] = {}
    for v in values or []:
        key, sep, value = v.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"{v!r}: expected ROLE={what}")
        out_[key.strip()] = value.strip()
    return out_


def rerun(
    run_id: Annotated[str, typer.Argument(help="the run to fork")],
    from_message: Annotated[
        str,
        typer.Option(
            "--from",
            help="fork at this message: its id, a unique id prefix (8+ characters) or #SEQ",
        ),
    ],
    model_group: Annotated[
        list[str] | None,
        typer.Option(
            "--model-group",
            help="ROLE=GROUP: the role reasons with another model group (repeatable)",
        ),
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option("--policies", help="another policies file", exists=True, dir_okay=False),
    ] = None,
    playbooks: Annotated[
        Path | None,
        typer.Option("--playbooks", help="another playbooks file", exists=True, dir_okay=False),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--prompt",
            help="ROLE=FILE: the role's system prompt, from FILE, for "
            "its model calls after the fork (repeatable)",
        ),
    ] = None,
    db: DbOpt = None,
    config_dir: ConfigDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Re-run a run from a message on with one thing changed; store it as a fork."""
    from plantcrew.replay.console import fork_report
    from plantcrew.replay.rerun import rerun as do_rerun
    from plantcrew.replay.sandbox import Changes
    from plantcrew.store import require_existing

    prompts: dict[str, str] = {}
    for role, file in _pairs(prompt, "FILE").items():
        try:
            prompts[role] = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(2, f"--prompt {role}: cannot read {file}: {exc.strerror}") from None
    changes = Changes(
        model_groups=_pairs(model_group, "GROUP"),
        policies=policies,
        playbooks=playbooks,
        prompts=prompts,
    )
    try:
        require_existing(_db(db))
        report = do_rerun(_db(db), run_id, from_message, changes, config_dir=config_dir)
    except (ConfigError, ScenarioError, NotFoundError) as exc:
        raise _bad_input(exc) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    if as_json:
        print(json.dumps(report.to_json(), indent=1, default=str))
    else:
        out.print(fork_report(report))


def diff(
    run_a: Annotated[str, typer.Argument(help="run A (e.g. the original)")],
    run_b: Annotated[str, typer.Argument(help="run B (e.g. its fork)")],
    db: DbOpt = None,
    db_b: Annotated[
        str | None, typer.Option("--db-b", help="run B's database (default: the same)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    changes_only: Annotated[
        bool, typer.Option("--changes-only", help="leave out what is the same")
    ] = False,
) -> None:
    """Compare two runs' timelines; exit 1 when they differ (like diff(1)).

    The timelines are aligned, with decisions, root causes, actions, approvals, timings,
    tokens and cost compared."""
    from plantcrew.replay.console import diff_report
    from plantcrew.replay.diff import diff_runs
    from plantcrew.replay.timeline import load_timeline
    from plantcrew.store import Store

    try:
        store_a = Store(_db(db), existing=True)
        store_b = Store(db_b, existing=True) if db_b else store_a
        result = diff_runs(load_timeline(store_a, run_a), load_timeline(store_b, run_b))
    except (NotFoundError, ScenarioError) as exc:
        raise _bad_input(exc) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    if as_json:
        print(json.dumps(result.to_json(), indent=1, default=str))
    else:
        out.print(diff_report(result, changes_only=changes_only))
    raise typer.Exit(0 if result.same else 1)


app = command_group(
    help="plantcrew replay, rerun and diff.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(replay)
app.command()(rerun)
app.command()(diff)


if __name__ == "__main__":
    from plantcrew.logs import configure
    from plantcrew.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, json=settings.log_json)
    app()
