"""Readiness checks: is the bus, the database and the model router usable from here?

``/healthz`` checks nothing but that the process answers (a liveness probe must not fail
because a dependency is down, or Kubernetes restarts healthy pods in a loop); ``/readyz``
runs these checks; ``/startupz`` says whether start-up finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from uuid6 import uuid7

from plantcrew import metrics
from plantcrew.bus import Bus, Subscription
from plantcrew.errors import StoreError
from plantcrew.messages import AgentHeartbeat, Message
from plantcrew.settings import redacted_url
from plantcrew.store import Store
from plantcrew.store.db import unavailable_cause

Check = Callable[[], Awaitable[str]]
"""A readiness check: returns a short detail when fine, raises when not."""


@dataclass
class CheckResult:
    """One check's outcome; ``seconds`` is how long it took (wall)."""

    name: str
    ok: bool
    detail: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "seconds": round(self.seconds, 4)}


async def run_checks(checks: dict[str, Check], timeout_s: float) -> list[CheckResult]:
    """Run every check concurrently, each within ``timeout_s``; sets ``plantcrew_ready``."""

    async def one(name: str, check: Check) -> CheckResult:
        t0 = time.perf_counter()
        try:
            detail = await asyncio.wait_for(check(), timeout_s)
            ok = True
        except TimeoutError:
            ok, detail = False, f"no answer within {timeout_s:g} s"
        except Exception as exc:  # a check's failure is its answer
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        metrics.READY.labels(name).set(1 if ok else 0)
        return CheckResult(name, ok, detail, time.perf_counter() - t0)

    return list(await asyncio.gather(*(one(n, c) for n, c in checks.items())))


def database_check(store: Store) -> Check:
    """``SELECT 1`` through the store's engine (in a worker thread)."""

    def ping() -> str:
        try:
            with store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            cause = unavailable_cause(exc) or "error"
            raise StoreError(f"database {cause}: {getattr(exc, 'orig', None) or exc}") from exc
        return store.engine.dialect.name

    async def check() -> str:
        return await run_in_threadpool(ping)

    return check


class BusProbe:
    """A round trip over the bus: request on a private plain subject this process answers.

    It proves that a publish reaches the broker and comes back to a subscriber, on every
    backend, without touching the crew's subjects.
    """

    def __init__(self, source: str = "api") -> None:
        self.source = source
        self.subject = f"_health.{uuid7().hex}"
        self._bus: Bus | None = None
        self._sub: Subscription | None = None

    async def attach(self, bus: Bus) -> None:
        """Answer probes on ``bus`` (call again after reconnecting)."""
        self._bus = bus

        async def echo(msg: Message) -> Message:
            return msg

        self._sub = await bus.subscribe(self.subject, echo)

    async def detach(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            finally:
                self._sub = None

    async def check(self) -> str:
        if self._bus is None:
            raise RuntimeError("no bus attached")
        hb = AgentHeartbeat(agent_id=self.source, role="probe", capabilities=[])
        msg = Message.new(hb, source=self.source, subject=self.subject)
        t0 = time.perf_counter()
        await self._bus.request(msg, timeout=2.0)
        ms = 1000 * (time.perf_counter() - t0)
        return f"{redacted_url(self._bus.url.split('?')[0])} round trip {ms:.1f} ms"


def router_check(router: Any) -> Check:
    """Every model group has at least one active deployment (the playbook counts).

    No model is called: a hosted model's availability shows in the model-call metrics and
    fallbacks, and the offline playbook keeps the crew working without any.
    """

    async def check() -> str:
        if router is None:
            raise RuntimeError("no model router loaded")
        empty = [g for g in router.groups if not router.deployments(g)]
        if empty:
            raise RuntimeError(f"groups without an active deployment: {', '.join(empty)}")
        n = sum(len(router.deployments(g)) for g in router.groups)
        return f"{len(router.groups)} groups, {n} active deployments"

    return check
