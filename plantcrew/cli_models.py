"""``plantcrew models check`` and ``plantcrew costs``: which models answer, what they cost.

Mounted in :mod:`plantcrew.cli` (``app.add_typer(models_app, name="models")`` and
``app.command("costs")(costs)``). Exit codes: 0 success, 1 a check failed (a deployment did not
answer), 2 bad input (config file, option, unknown run), 3 runtime failure (database).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from plantcrew.errors import ConfigError, NotFoundError, PlantcrewError
from plantcrew.terminal import command_group, err, fail, out, plain

models_app = command_group(
    help="The model deployments of config/models.yaml.", no_args_is_help=True
)


def _models_path(config: Path | None) -> Path:
    from plantcrew.settings import get_settings

    return config or get_settings().config_dir / "models.yaml"


@models_app.command("check")
def models_check(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="models.yaml (default: <config dir>/models.yaml)"),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="seconds each deployment has to answer")
    ] = 15.0,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="only this group (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array")] = False,
) -> None:
    """Send each deployment one small request: does it answer, how fast, what error.

    Exit 1 when an active deployment does not answer (the crew still runs on the next one,
    and on the playbook last).
    """
    from plantcrew.llm import ModelRouter
    from plantcrew.llm.check import check_deployments

    path = _models_path(config)
    try:
        router = ModelRouter.from_file(path, playbooks_path=path.parent / "playbooks.yaml")
        results = asyncio.run(check_deployments(router, timeout_s=timeout, groups=group))
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    except PlantcrewError as exc:  # an unknown --group
        raise fail(2, str(exc)) from None
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
        raise typer.Exit(1 if failed else 0)
    tbl = Table(title=escape(f"model deployments ({path})"))
    for name in ("group", "deployment", "model", "answers", "latency ms", "tokens", "note"):
        tbl.add_column(
            name, justify="right" if name in ("latency ms", "tokens") else "left", overflow="fold"
        )
    mark = {"ok": "[green]yes[/]", "failed": "[red]no[/]", "skipped": "[dim]skipped[/]"}
    for r in results:
        tbl.add_row(
            plain(r.group),
            plain(r.deployment),
            plain(r.model),
            mark[r.status],
            "" if r.latency_ms is None else f"{r.latency_ms:.0f}",
            str(r.prompt_tokens + r.completion_tokens) if r.status == "ok" else "",
            plain(r.error or ""),
        )
    out.print(tbl)
    answered = sum(r.status == "ok" for r in results)
    active = answered + len(failed)
    out.print(
        f"{answered} of {active} active deployments answer"
        + (f"; [red]{len(failed)} do not[/]" if failed else ""),
        highlight=False,
    )
    raise typer.Exit(1 if failed else 0)


def _budgets(config: Path | None) -> Any:
    """The budgets of models.yaml, or None (with a note) when it cannot be read."""
    from plantcrew.llm import load_models_config

    try:
        return load_models_config(_models_path(config)).budgets
    except ConfigError as exc:
        err.print(Text.assemble(("note:", "yellow"), f" budgets not shown: {exc}"))
        return None


def _share(spent: float, limit: float | None) -> str:
    if limit is None:
        return ""
    if limit <= 0:
        return "spent (limit 0)"
    return f"{100 * spent / limit:.0f}% of ${limit:g}"


def _cost_table(
    title: str, rows: list[Any], key: str, *, models: bool = False, limit: float | None = None
) -> Table:
    tbl = Table(title=escape(title))
    cols = [
        key,
        *(["model"] if models else []),
        "calls",
        "ok",
        "failed",
        "fallback",
        "repaired",
        "degraded",
        "prompt tok",
        "completion tok",
        "cost USD",
        *(["budget"] if limit is not None else []),
    ]
    for c in cols:
        tbl.add_column(
            c, justify="left" if c in (key, "model", "budget") else "right", overflow="fold"
        )
    for r in rows:
        cells: list[str | Text] = [
            plain(r.key),
            *([plain(r.models)] if models else []),
            str(r.calls),
            str(r.ok),
            str(r.failed),
            str(r.fallback),
            str(r.repaired),
            str(r.degraded),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            f"{r.cost_usd:.6f}",
        ]
        if limit is not None:
            cells.append(_share(r.cost_usd, limit))
        tbl.add_row(*cells)
    return tbl


def costs(
    run: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="only calls from this day on (YYYY-MM-DD)")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="database URL (default: $PLANTCREW_DB_URL or sqlite:///plantcrew.db)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="models.yaml whose budgets to compare with")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Tokens and cost of model calls: per deployment, per incident, per agent, per day."""
    from plantcrew.settings import get_settings
    from plantcrew.store import Store
    from plantcrew.store.costs import BadDateError, cost_report

    try:
        store = Store(db or get_settings().db_url, existing=True)
        if run is not None:
            store.get_run(run)
        with store.tx() as s:
            report = cost_report(s, run_id=run, since=since)
    except (BadDateError, NotFoundError) as exc:
        raise fail(2, str(exc)) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    budgets = _budgets(config)
    if as_json:
        doc = report.to_json()
        doc["budgets"] = budgets.model_dump() if budgets is not None else None
        print(json.dumps(doc, indent=2))
        return
    scope = (f"run {run}" if run else "every run") + (
        f", since {report.since}" if report.since else ""
    )
    if report.total.calls == 0:
        out.print(f"no model calls recorded ({scope})", highlight=False, markup=False)
        return
    per_incident = budgets.per_incident_usd if budgets is not None else None
    per_day = budgets.per_day_usd if budgets is not None else None
    out.print(
        _cost_table(
            f"model calls by deployment ({scope})", report.by_deployment, "deployment", models=True
        )
    )
    out.print(_cost_table("by incident", report.by_incident, "incident", limit=per_incident))
    out.print(_cost_table("by agent", report.by_agent, "agent"))
    out.print(_cost_table("by day", report.by_day, "day", limit=per_day))
    t = report.total
    out.print(
        f"total: {t.calls} calls, {t.prompt_tokens} prompt + {t.completion_tokens} "
        f"completion tokens, ${t.cost_usd:.6f}; {t.fallback} fallback, {t.repaired} "
        f"repaired, {t.degraded} degraded, {t.failed} failed",
        highlight=False,
    )


__all__ = ["costs", "models_app", "models_check"]
