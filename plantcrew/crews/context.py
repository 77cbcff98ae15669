"""What agents in a long-lived process need to know about each run they serve.

An in-process crew is built for one run: its agents get the scenario's assets, policies and
Monitor settings. A worker process serves every run on its bus, so it reads them per run from
the ``Run`` row the runner wrote: ``config["scenario"]`` (plant, monitor overrides, policies
file) and ``config["policies"]`` (the policies the runner loaded). A run without a scenario (live
operation) or unknown to the database gets the defaults: the default plant's assets,
``<config_dir>/policies.yaml`` and the default Monitor settings.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from plantcrew.agents import Asset, Policies
from plantcrew.crews.clocks import as_utc
from plantcrew.detect import MonitorConfig
from plantcrew.errors import NotFoundError
from plantcrew.plant.spec import PlantSpec, ValveSpec, default_plant
from plantcrew.store import Store

log = structlog.get_logger("plantcrew.crews.context")


def assets_of(plant: PlantSpec) -> dict[str, Asset]:
    """The asset registry of a plant spec: device id → type (and valve role)."""
    out: dict[str, Asset] = {}
    for dev in plant.devices:
        role = dev.role if isinstance(dev, ValveSpec) else None
        out[dev.id] = Asset(type=dev.type, role=role)
    return out


@dataclass(frozen=True)
class RunContext:
    """One run as its agents see it. ``started_at`` is None for a run the database lacks."""

    run_id: str | None
    started_at: datetime | None
    live: bool
    assets: dict[str, Asset]
    policies: Policies
    monitor: MonitorConfig


class RunContexts:
    """Run contexts read from the database, the most recent ``max_runs`` kept in memory."""

    def __init__(self, store: Store, config_dir: Path, *, max_runs: int = 256) -> None:
        self.store, self.config_dir, self.max_runs = store, config_dir, max_runs
        self._cache: OrderedDict[str | None, RunContext] = OrderedDict()
        self._default: RunContext | None = None

    def get(self, run_id: str | None) -> RunContext:
        """The context of ``run_id`` (defaults for live or unknown runs; see module doc).

        Raises ConfigError when the run's stored scenario or policies no longer validate.
        """
        hit = self._cache.get(run_id)
        if hit is not None:
            self._cache.move_to_end(run_id)
            return hit
        ctx = self._load(run_id)
        self._keep(ctx)
        return ctx

    def _keep(self, ctx: RunContext) -> None:
        if ctx.started_at is not None:  # an unknown run may appear later: not cached
            self._cache[ctx.run_id] = ctx
            while len(self._cache) > self.max_runs:
                self._cache.popitem(last=False)

    async def load(self, run_id: str | None) -> RunContext:
        """:meth:`get`, reading the database in a thread (not on the event loop) when the run
        is not cached yet."""
        hit = self._cache.get(run_id)
        if hit is not None:
            self._cache.move_to_end(run_id)
            return hit
        ctx = await asyncio.to_thread(self._load, run_id)
        self._keep(ctx)
        return ctx

    def start_of(self, run_id: str | None) -> datetime | None:
        """The run's plant time 0 (None when unknown)."""
        return self.get(run_id).started_at

    def default(self) -> RunContext:
        """The context of live operation (see module doc)."""
        if self._default is None:
            self._default = RunContext(
                run_id=None,
                started_at=None,
                live=True,
                assets=assets_of(default_plant()),
                policies=Policies.load(self.config_dir / "policies.yaml"),
                monitor=MonitorConfig(),
            )
        return self._default

    def _load(self, run_id: str | None) -> RunContext:
        base = self.default()
        if run_id is None:
            return base
        try:
            run = self.store.get_run(run_id)
        except NotFoundError:
            log.info("run not in the database: live defaults", run=run_id)
            return RunContext(run_id, None, True, base.assets, base.policies, base.monitor)
        scenario: dict[str, Any] | None = run.config.get("scenario")
        started = as_utc(run.started_at)
        if scenario is None:
            return RunContext(run_id, started, True, base.assets, base.policies, base.monitor)
        plant = PlantSpec.model_validate(scenario["plant"]) if "plant" in scenario else None
        assets = assets_of(plant) if plant is not None else base.assets
        if "policies" in run.config:
            policies = Policies.model_validate(run.config["policies"])
        elif scenario.get("policies"):
            policies = Policies.load(Path(run.scenario_path).parent / scenario["policies"])
        else:
            policies = base.policies
        monitor = MonitorConfig(**scenario.get("monitor", {}))
        return RunContext(run_id, started, False, assets, policies, monitor)


__all__ = ["RunContext", "RunContexts", "assets_of"]
