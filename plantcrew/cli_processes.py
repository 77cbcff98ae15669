"""``plantcrew coordinator``, ``plantcrew worker`` and ``plantcrew up``: the crew as processes;
``plantcrew agents``: their agents as the database has them.

Mounted in ``plantcrew/cli.py`` with::

    from plantcrew.cli_processes import agents, coordinator, up, worker
    app.command()(coordinator)
    app.command()(worker)
    app.command()(up)
    app.command()(agents)

Each process serves every run on its bus until SIGTERM (or Ctrl-C): then it stops taking work,
lets what is in flight finish for ``--grace`` seconds, hands back the rest and exits 0. Each
serves ``/healthz``, ``/readyz``, ``/startupz`` and ``/metrics`` on ``--probe-port`` (9100;
0 turns the probes off). Exit codes: 0 stopped normally, 2 bad input (role, option, config),
3 runtime failure (bus or database unreachable, probe port taken).

On a broker bus every one of them refuses to start (exit 2) unless ``PLANTCREW_APPROVAL_SECRET``
holds a strong secret (:func:`plantcrew.store.tokens.require_approval_secret`): the
Coordinator issues approval tokens and the Operator checks them, and a crew's roles move
between processes (``--role`` repeats, ``up`` runs them all), so one rule holds for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plantcrew.crews.config import EVENT_CONSUMERS, ROLES
from plantcrew.errors import ConfigError, NotFoundError, PlantcrewError
from plantcrew.stopping import exit_stopped, stop_on_signals
from plantcrew.terminal import command_group, fail, out, plain

if TYPE_CHECKING:
    from plantcrew.api.worker_probes import WorkerProbes
    from plantcrew.bus import Bus
    from plantcrew.store import Store

BusOpt = Annotated[str | None, typer.Option("--bus", help="bus URL (default: $PLANTCREW_BUS_URL)")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="database URL (default: $PLANTCREW_DB_URL or sqlite:///plantcrew.db)"
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config-dir", help="folder of crew/models/policies YAML (default: config/)"),
]
ProbeOpt = Annotated[
    int,
    typer.Option(
        "--probe-port", min=0, max=65535, help="port of /healthz, /readyz, /metrics (0: none)"
    ),
]
ProbeHostOpt = Annotated[str, typer.Option("--probe-host", help="address the probes listen on")]
GraceOpt = Annotated[
    float,
    typer.Option("--grace", min=0, help="on SIGTERM, seconds to let tasks in flight finish"),
]


def _urls(bus: str | None, db: str | None, config_dir: Path | None) -> tuple[str, str, Path]:
    from plantcrew.settings import get_settings

    s = get_settings()
    return bus or s.bus_url, db or s.db_url, config_dir or s.config_dir


def _need_broker(bus_url: str, what: str) -> None:
    if bus_url.startswith("memory:"):
        raise fail(
            2,
            f"{what} needs a broker bus its peers share: --bus nats://HOST:4222 or "
            "redis://HOST:6379 (memory:// lives in one process; use `plantcrew up` there)",
        )


def _need_secret(bus_url: str, what: str) -> None:
    from plantcrew.store.tokens import require_approval_secret

    try:
        require_approval_secret(bus_url, what)
    except ConfigError as exc:
        raise fail(2, str(exc)) from None


def coordinator(
    bus: BusOpt = None,
    db: DbOpt = None,
    config_dir: ConfigOpt = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=256,
            help="crew.events consumers: events in flight at once (those that arrive "
            "together share a database transaction)",
        ),
    ] = EVENT_CONSUMERS,
    probe_port: ProbeOpt = 9100,
    probe_host: ProbeHostOpt = "0.0.0.0",
) -> None:
    """Run the Coordinator of every run on the bus (one per plant namespace)."""
    bus_url, db_url, cfg = _urls(bus, db, config_dir)
    _need_broker(bus_url, "plantcrew coordinator")
    _need_secret(bus_url, "plantcrew coordinator")
    _run_process(
        bus_url, db_url, cfg, with_coordinator=True, roles=(), concurrency=concurrency,
        probe=(probe_host, probe_port), grace_s=0.0,
    )  # fmt: skip


def worker(
    role: Annotated[
        list[str],
        typer.Option("--role", help=f"role to run, repeatable: {', '.join(ROLES)}"),
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="agents of each role")
    ] = 1,
    bus: BusOpt = None,
    db: DbOpt = None,
    config_dir: ConfigOpt = None,
    probe_port: ProbeOpt = 9100,
    probe_host: ProbeHostOpt = "0.0.0.0",
    grace: GraceOpt = 30.0,
) -> None:
    """Run agents of one role (or a few); every worker of a role shares its tasks."""
    bus_url, db_url, cfg = _urls(bus, db, config_dir)
    _need_broker(bus_url, "plantcrew worker")
    _check_roles(role)
    _need_secret(bus_url, "plantcrew worker")
    _run_process(
        bus_url, db_url, cfg, with_coordinator=False, roles=tuple(role),
        concurrency=concurrency, probe=(probe_host, probe_port), grace_s=grace,
    )  # fmt: skip


def up(
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="only these roles (repeatable; default: every role)"),
    ] = None,
    bus: BusOpt = None,
    db: DbOpt = None,
    config_dir: ConfigOpt = None,
    probe_port: ProbeOpt = 9100,
    probe_host: ProbeHostOpt = "0.0.0.0",
    grace: GraceOpt = 30.0,
) -> None:
    """Run the Coordinator and every role (workers per role from crew.yaml) in one process."""
    bus_url, db_url, cfg = _urls(bus, db, config_dir)
    roles = tuple(role) if role else ROLES
    _check_roles(roles)
    _need_secret(bus_url, "plantcrew up")
    from plantcrew.crews.config import CrewConfig

    try:
        crew = CrewConfig.load(cfg / "crew.yaml")
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    _run_process(
        bus_url, db_url, cfg, with_coordinator=True, roles=roles,
        concurrency={r: crew.role(r).workers for r in roles}, probe=(probe_host, probe_port),
        grace_s=grace,
    )  # fmt: skip


def agents(
    db: DbOpt = None,
    config_dir: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON array")] = False,
) -> None:
    """List the crew's agents as the database has them (read-only).

    Role, capabilities, the age of the last heartbeat a Coordinator process recorded, and
    whether the agent counts as live by the Coordinator's rule (heard within crew.yaml's
    coordinator.agent_ttl_s and not stopping). Exit 2 for a missing database or a bad crew.yaml."""
    from plantcrew.crews.config import CrewConfig
    from plantcrew.crews.roster import agent_views
    from plantcrew.store import Store

    _, db_url, cfg = _urls(None, db, config_dir)
    try:
        ttl_s = CrewConfig.load(cfg / "crew.yaml").coordinator.agent_ttl_s
        store = Store(db_url, existing=True)
    except (ConfigError, NotFoundError) as exc:
        raise fail(2, str(exc)) from None
    try:
        views = agent_views(store.agents(), ttl_s)
    finally:
        store.dispose()
    if as_json:
        print(json.dumps([
            {**dataclasses.asdict(v), "last_seen": v.last_seen.isoformat(),
             "age_s": round(v.age_s, 3), "state": v.state}
            for v in views
        ], indent=2))  # fmt: skip
        return
    if not views:
        out.print(
            "no agent recorded: a Coordinator process (plantcrew coordinator or up) on this "
            "database writes the agents it hears"
        )
        return
    from rich.table import Table

    tbl = Table(caption=f"live: heard within {ttl_s:g} s (crew.yaml coordinator.agent_ttl_s)")
    for col in ("agent", "role", "capabilities", "last heartbeat (UTC)", "age s", "state"):
        tbl.add_column(col)
    for v in views:
        tbl.add_row(
            plain(v.agent_id), plain(v.role), plain(", ".join(v.capabilities) or "-"),
            v.last_seen.isoformat(timespec="seconds"), f"{v.age_s:.1f}", v.state,
        )  # fmt: skip
    out.print(tbl)


def _check_roles(roles: tuple[str, ...] | list[str]) -> None:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise fail(2, f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")


def _run_process(
    bus_url: str,
    db_url: str,
    config_dir: Path,
    *,
    with_coordinator: bool,
    roles: tuple[str, ...],
    concurrency: int | dict[str, int],
    probe: tuple[str, int],
    grace_s: float,
) -> None:
    try:
        asyncio.run(
            _serve(
                bus_url, db_url, config_dir, with_coordinator, roles, concurrency, probe, grace_s
            )
        )
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    except PlantcrewError as exc:
        raise fail(3, str(exc)) from None
    except OSError as exc:  # e.g. the probe port is taken
        raise fail(3, str(exc)) from None
    exit_stopped()  # stopped cleanly: the bus and the database are closed


async def _serve(
    bus_url: str,
    db_url: str,
    config_dir: Path,
    with_coordinator: bool,
    roles: tuple[str, ...],
    concurrency: int | dict[str, int],
    probe: tuple[str, int],
    grace_s: float,
) -> None:
    import structlog

    from plantcrew.bus import connect
    from plantcrew.crews.config import CrewConfig
    from plantcrew.crews.host import CoordinatorHost
    from plantcrew.crews.worker import WorkerHost
    from plantcrew.detect import load_signatures
    from plantcrew.llm.config import load_models_config
    from plantcrew.store import Store

    log = structlog.get_logger("plantcrew.process")
    stop = stop_on_signals()
    store = Store(db_url)
    bus = await connect(bus_url)
    host: CoordinatorHost | None = None
    workers: WorkerHost | None = None
    probes: WorkerProbes | None = None
    try:
        if roles:
            workers = WorkerHost(
                bus, store, roles=roles, config_dir=config_dir, concurrency=concurrency
            )
        if with_coordinator:
            host = CoordinatorHost(
                bus,
                store,
                config=CrewConfig.load(config_dir / "crew.yaml"),
                concurrency=concurrency if isinstance(concurrency, int) else EVENT_CONSUMERS,
                signatures=load_signatures(config_dir / "signatures.yaml"),
                budgets=load_models_config(config_dir / "models.yaml").budgets,
            )
        if probe[1]:
            probes = await _start_probes(bus, store, probe)
        if host is not None:
            await host.start()
        if workers is not None:
            await workers.start()
        if probes is not None:
            probes.ready_to_serve()
        log.info("serving", bus=bus_url.split("?")[0], roles=list(roles), coordinator=bool(host))
        await stop.wait()
        log.info("stopping", grace_s=grace_s)
    finally:
        if workers is not None:
            await workers.stop(grace_s)
        if host is not None:
            await host.stop()
        if probes is not None:
            await probes.stop()
        await bus.close()
        store.dispose()


async def _start_probes(bus: Bus, store: Store, probe: tuple[str, int]) -> WorkerProbes:
    from plantcrew.api.health import BusProbe, database_check
    from plantcrew.api.worker_probes import WorkerProbes

    bus_probe = BusProbe(source="worker")
    await bus_probe.attach(bus)
    probes = WorkerProbes(
        host=probe[0],
        port=probe[1],
        checks={"bus": bus_probe.check, "database": database_check(store)},
    )
    await probes.start()
    return probes


# a stand-alone entry for development: python -m plantcrew.cli_processes worker --role ...
_dev = command_group(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
_dev.command()(coordinator)
_dev.command()(worker)
_dev.command()(up)

if __name__ == "__main__":
    from plantcrew.logs import configure
    from plantcrew.settings import get_settings

    configure(get_settings().log_level, json=get_settings().log_json)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_dev())
