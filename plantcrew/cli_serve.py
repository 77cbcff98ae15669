"""``plantcrew serve`` (the HTTP service and web console) and ``plantcrew tokens``.

Mounted in ``plantcrew/cli.py`` with::

    app.command()(serve)
    app.add_typer(tokens_app, name="tokens")

Exit codes: 0 stopped normally, 2 bad input (options, scenario, config), 3 runtime failure
(database or bus unreachable, port taken).

On SIGTERM (or Ctrl-C) ``serve`` stops as the crew processes do (:mod:`plantcrew.stopping`):
it closes its listener, ends its event streams with a closing comment, lets requests in
flight finish within the grace period (``--grace``, default ``PLANTCREW_API_SHUTDOWN_GRACE_S``,
20 s) and cuts the rest; with ``--scenario`` it then ends the run at the end of its step
(recorded ``interrupted``, resumable) and stops its crew, in what is left of the grace; then
it closes the bus and the database and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from plantcrew.errors import ConfigError, NotFoundError, PlantcrewError, ScenarioError
from plantcrew.stopping import exit_stopped, stop_on_signals
from plantcrew.terminal import command_group, err, fail, out, plain

if TYPE_CHECKING:
    import uvicorn

    from plantcrew.api.context import ApiContext

tokens_app = command_group(
    help="API tokens of the HTTP service: create, list, revoke.", no_args_is_help=True
)

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="database URL (default: $PLANTCREW_DB_URL or sqlite:///plantcrew.db)"
    ),
]


def _db(url: str | None) -> str:
    from plantcrew.settings import get_settings

    return url or get_settings().db_url


def serve(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus", help="bus URL (default: $PLANTCREW_BUS_URL; memory:// with --scenario)"
        ),
    ] = None,
    db: DbOpt = None,
    scenario: Annotated[
        Path | None,
        typer.Option("--scenario", help="also run this scenario with an in-process crew"),
    ] = None,
    speed: Annotated[
        float,
        typer.Option("--speed", min=0.1, help="with --scenario: plant seconds per wall second"),
    ] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", help="with --scenario: its seed")] = None,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            min=0,
            help="on SIGTERM, seconds requests in flight (and the run's step) may take to "
            "finish (default: $PLANTCREW_API_SHUTDOWN_GRACE_S or 20)",
        ),
    ] = None,
) -> None:
    """Serve the API, the web console, probes and metrics.

    The API is under /api/v1 (OpenAPI at /api/v1/docs), the console at /console/, the probes
    at /healthz, /readyz and /startupz, metrics at /metrics. With --scenario, host a crew running
    that scenario at --speed, so people can watch and approve in the console. SIGTERM stops
    it gracefully within --grace seconds (module doc) and it exits 0."""
    from uuid6 import uuid7

    from plantcrew.settings import get_settings

    if scenario is not None:
        from plantcrew.scenarios.schema import load_scenario

        try:
            load_scenario(scenario)
        except ConfigError as exc:
            raise fail(2, str(exc)) from None
    bus_url = bus or (
        f"memory://serve-{uuid7().hex[-8:]}" if scenario is not None else get_settings().bus_url
    )
    if scenario is not None:  # the run's Coordinator issues approval tokens on that bus
        from plantcrew.store.tokens import require_approval_secret

        try:
            require_approval_secret(bus_url, "plantcrew serve --scenario")
        except ConfigError as exc:
            raise fail(2, str(exc)) from None
    try:
        asyncio.run(_serve(host, port, bus_url, _db(db), scenario, speed, seed, grace))
    except (ConfigError, ScenarioError) as exc:
        raise fail(2, str(exc)) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        if exc.code not in (0, None):
            raise fail(3, f"the server could not start on {host}:{port}") from None
    exit_stopped()  # stopped cleanly: the bus and the database are closed


async def _serve(
    host: str,
    port: int,
    bus_url: str,
    db_url: str,
    scenario: Path | None,
    speed: float,
    seed: int | None,
    grace_s: float | None,
) -> None:
    import structlog

    from plantcrew.api.app import create_app
    from plantcrew.api.config import ApiSettings
    from plantcrew.api.server import EmbeddedServer, server_config
    from plantcrew.bus import connect
    from plantcrew.store import Store

    log = structlog.get_logger("plantcrew.serve")
    stop = stop_on_signals()
    settings = ApiSettings()
    grace = settings.shutdown_grace_s if grace_s is None else grace_s
    store = Store(db_url)
    bus = await connect(bus_url)
    app = create_app(settings, store=store, bus=bus)
    ctx: ApiContext = app.state.ctx
    server = EmbeddedServer(server_config(app, host, port, grace_s=grace))
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    run_stop = asyncio.Event()
    runner: asyncio.Task[None] | None = None
    try:
        if scenario is not None:
            while not server.started and not serving.done() and not stop.is_set():
                await asyncio.sleep(0.05)
            if server.started:
                runner = asyncio.create_task(
                    _run_scenario(scenario, bus_url, db_url, speed, seed, run_stop)
                )
        waiting: set[asyncio.Task[None] | asyncio.Task[bool]] = {serving, stopping}
        if runner is not None:
            waiting.add(runner)
        while not serving.done() and not stopping.done():
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if runner is not None and runner in done:
                waiting.discard(runner)
                _report(runner)
                if not serving.done():  # the run closed the in-process bus: serve on a fresh one
                    await ctx.attach_bus(await connect(bus_url))
        if stopping.done():
            await _stop_serving(server, serving, runner, run_stop, ctx, grace)
        await serving
    finally:
        stopping.cancel()
        if serving.done() and not serving.cancelled():
            serving.exception()  # retrieved: serve() reports uvicorn's SystemExit at start-up
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.wait({runner})
            _report(runner)
        await ctx.detach_bus()
        await bus.close()
        store.dispose()
    log.info("stopped")


async def _stop_serving(
    server: uvicorn.Server,
    serving: asyncio.Task[None],
    runner: asyncio.Task[None] | None,
    run_stop: asyncio.Event,
    ctx: ApiContext,
    grace_s: float,
) -> None:
    """SIGTERM: stop taking requests, end the event streams, let requests in flight finish
    (uvicorn cuts them after ``grace_s``); then end the run and its crew in what is left."""
    import structlog

    log = structlog.get_logger("plantcrew.serve")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    log.info("stopping", grace_s=grace_s)
    ctx.stopping.set()
    server.should_exit = True
    await asyncio.wait({serving})
    if runner is None or runner.done():
        return
    run_stop.set()
    await asyncio.wait({runner}, timeout=max(0.0, deadline - loop.time()))
    if runner.done():
        _report(runner)
    else:  # cancelled by the caller; the run stays "running" and --resume continues it
        log.warning("the run did not end its step within the grace period", grace_s=grace_s)


def _report(runner: asyncio.Task[None]) -> None:
    """Log how the scenario's task ``runner`` (done) failed, if it did."""
    import structlog

    exc = None if runner.cancelled() else runner.exception()
    if exc is not None:
        structlog.get_logger("plantcrew.serve").error("scenario failed", error=str(exc))


async def _run_scenario(
    path: Path, bus_url: str, db_url: str, speed: float, seed: int | None, stop: asyncio.Event
) -> None:
    import structlog

    from plantcrew.scenarios.runner import run_scenario

    log = structlog.get_logger("plantcrew.serve")
    result = await run_scenario(
        path, bus_url=bus_url, db_url=db_url, seed=seed, pace=speed, stop=stop
    )
    log.info(
        "scenario stopped" if stop.is_set() else "scenario finished",
        run_id=result.run_id,
        scenario=result.scenario,
        passed=result.passed,
        incidents=len(result.incidents),
    )


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="the person or service holding it")],
    role: Annotated[str, typer.Option("--role", help="viewer | operator | approver | admin")],
    approver_role: Annotated[
        str | None,
        typer.Option("--approver-role", help="plant role for approvals, e.g. shift_supervisor"),
    ] = None,
    ttl_days: Annotated[
        float | None, typer.Option("--ttl-days", min=0.001, help="expires after this")
    ] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Issue an API token. It is printed once, on stdout; only its hash is kept."""
    from plantcrew.store import Store
    from plantcrew.store.access import AccessStore

    try:
        row, token = AccessStore(Store(_db(db))).create_token(
            name,
            role,
            approver_role=approver_role,
            ttl=timedelta(days=ttl_days) if ttl_days else None,
            note=note,
        )
    except PlantcrewError as exc:
        raise fail(2, str(exc)) from None
    if as_json:
        print(
            json.dumps(
                {
                    "id": row.id,
                    "name": row.name,
                    "role": row.role,
                    "approver_role": row.approver_role,
                    "expires_at": row.expires_at.isoformat() if row.expires_at else None,
                    "token": token,
                }
            )
        )
        return
    err.print(
        f"token {row.id} for {row.name} (role {row.role}"
        + (f", plant role {row.approver_role}" if row.approver_role else "")
        + "); it is shown once:",
        highlight=False,
        markup=False,
    )
    print(token)


@tokens_app.command("list")
def tokens_list(
    db: DbOpt = None,
    show_all: Annotated[bool, typer.Option("--all", help="include revoked tokens")] = False,
) -> None:
    """List tokens (never their secrets)."""
    from plantcrew.store import Store
    from plantcrew.store.access import AccessStore

    tbl = Table()
    for col in ("id", "name", "role", "plant role", "created", "expires", "revoked"):
        tbl.add_column(col)
    try:
        store = Store(_db(db), existing=True)
    except NotFoundError as exc:
        raise fail(2, str(exc)) from None
    for t in AccessStore(store).tokens(include_revoked=show_all):
        tbl.add_row(
            t.id,
            plain(t.name),
            plain(t.role),
            plain(t.approver_role or ""),
            t.created_at.isoformat(timespec="seconds"),
            t.expires_at.isoformat(timespec="seconds") if t.expires_at else "",
            t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
        )
    out.print(tbl)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (first column of list)")],
    db: DbOpt = None,
) -> None:
    """Revoke a token at once."""
    from plantcrew.store import Store
    from plantcrew.store.access import AccessStore

    try:
        row = AccessStore(Store(_db(db), existing=True)).revoke(token_id)
    except NotFoundError as exc:
        raise fail(2, str(exc)) from None
    out.print(f"token {row.id} of {row.name} revoked", markup=False)


# a stand-alone entry for development: python -m plantcrew.cli_serve ...
_dev = command_group(no_args_is_help=True, add_completion=False)
_dev.command()(serve)
_dev.add_typer(tokens_app, name="tokens")

if __name__ == "__main__":
    from plantcrew.logs import configure
    from plantcrew.settings import get_settings

    configure(get_settings().log_level, json=get_settings().log_json)
    sys.exit(_dev())
