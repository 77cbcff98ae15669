"""The HTTP service: ``create_app(...)`` builds the FastAPI app of ``plantcrew serve``.

Routes (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/v1/docs``):

- ``/api/v1/...``: telemetry ingest, incidents (list, get, timeline, SSE stream), approvals
  (list, get, approve, reject), runs (list, get, replay export), agents, models, me. Bearer
  API tokens with roles (``plantcrew.store.access``), per-token rate limits, idempotency keys.
- ``/healthz`` (the process answers; nothing else is checked), ``/readyz`` (bus round trip,
  database, model router), ``/startupz`` (start-up done), ``/metrics`` (Prometheus).
- ``/console/``: the web console (one static page using the same API and tokens).

Every response carries ``X-Request-ID``; every log line of a request carries it too. While
the database cannot serve (unreachable, or busy past its timeouts) a request that needs it gets
503 with ``Retry-After`` and a problem naming the cause, and ``/readyz`` says not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from plantcrew import metrics, tracing
from plantcrew.api.config import ApiSettings
from plantcrew.api.context import ApiContext
from plantcrew.api.health import run_checks
from plantcrew.api.middleware import RequestContextMiddleware
from plantcrew.api.problems import ApiError, Problem, problem_responses, unavailable
from plantcrew.api.routes import approvals, incidents, runs, system, telemetry
from plantcrew.api.schemas import CheckOut, HealthOut
from plantcrew.api.store_metrics import StoreCollector
from plantcrew.bus import Bus, connect
from plantcrew.crews.config import CrewConfig
from plantcrew.errors import PlantcrewError, StoreUnavailable
from plantcrew.settings import get_settings, redacted_url
from plantcrew.store import Store
from plantcrew.store.access import AccessStore

log = structlog.get_logger("plantcrew.api")
API_PREFIX = "/api/v1"
CONSOLE_DIR = Path(__file__).resolve().parent / "console"
RECONNECT_S = 2.0


def create_app(
    settings: ApiSettings | None = None,
    *,
    store: Store | None = None,
    db_url: str | None = None,
    bus: Bus | None = None,
    bus_url: str | None = None,
    router: Any = None,
    load_router: bool = True,
) -> FastAPI:
    """Build the service.

    ``store`` (or ``db_url``, default ``$PLANTCREW_DB_URL``) is the database; ``bus`` a
    connected bus owned by the caller, or ``bus_url`` (default ``$PLANTCREW_BUS_URL``) for one
    the app connects at start-up (retrying every 2 s until the broker answers) and closes at
    shutdown. ``router`` is a ``ModelRouter``; with ``load_router`` and none given, it is
    built from ``<config_dir>/models.yaml``. An agent is live while heard within
    ``coordinator.agent_ttl_s`` of ``<config_dir>/crew.yaml``, the Coordinator's own setting,
    so ``/agents`` calls live exactly the agents the Coordinator routes to. Raises ConfigError
    for a bad models or crew file and StoreError when the database cannot be opened.
    """
    settings = settings or ApiSettings()
    base = get_settings()
    crew = CrewConfig.load(base.config_dir / "crew.yaml")
    store = store or Store(db_url or base.db_url)
    if router is None and load_router:
        from plantcrew.llm import ModelRouter

        router = ModelRouter.from_file(
            base.config_dir / "models.yaml", playbooks_path=base.config_dir / "playbooks.yaml"
        )
    ctx = ApiContext(
        settings=settings,
        store=store,
        access=AccessStore(store),
        bus_url=bus.url if bus is not None else (bus_url or base.bus_url),
        agent_ttl_s=crew.coordinator.agent_ttl_s,
        router=router,
    )
    store_registry = CollectorRegistry(auto_describe=False)
    store_registry.register(StoreCollector(store))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.configure_tracing(settings.service_name)
        with contextlib.suppress(PlantcrewError):
            await run_in_threadpool(
                ctx.access.purge_requests, timedelta(seconds=settings.idempotency_ttl_s)
            )
        owned = bus is None
        connector: asyncio.Task[None] | None = None
        if bus is not None:
            await ctx.attach_bus(bus)
            ctx.started = True
        else:
            connector = asyncio.create_task(_connect_loop(ctx))
        try:
            yield
        finally:
            if connector is not None:
                connector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connector
            current = ctx.bus
            await ctx.detach_bus()
            if owned and current is not None:
                with contextlib.suppress(Exception):
                    await current.close()

    app = FastAPI(
        title="plantcrew",
        version="1",
        summary="Automated anomaly response for industrial and IoT plants by a crew of agents.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(RequestContextMiddleware)
    _errors(app)

    v1 = APIRouter(prefix=API_PREFIX, responses=problem_responses(503))
    for module in (telemetry, incidents, approvals, runs, system):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(_probes(ctx, store_registry))
    if settings.console:
        app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/console/")

    return app


async def _connect_loop(ctx: ApiContext) -> None:
    while True:
        try:
            bus = await connect(ctx.bus_url)
            await ctx.attach_bus(bus)
            ctx.started = True
            log.info("bus connected", bus=redacted_url(ctx.bus_url.split("?")[0]))
            return
        except PlantcrewError as exc:
            log.warning("bus not reachable; retrying", error=str(exc), in_s=RECONNECT_S)
            await asyncio.sleep(RECONNECT_S)


def _errors(app: FastAPI) -> None:
    def rid(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = exc.title if isinstance(exc, ApiError) else str(exc.detail)
        detail = str(exc.detail) if isinstance(exc, ApiError) else ""
        body = Problem(
            title=title,
            status=exc.status_code,
            detail=detail,
            request_id=rid(request),
            errors=exc.errors if isinstance(exc, ApiError) else None,
        )
        return JSONResponse(
            body.model_dump(exclude_none=True),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type="application/problem+json",
        )

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("database cannot serve: 503", cause=exc.cause, error=str(exc)[:500])
        retry_s = request.app.state.ctx.settings.unavailable_retry_s
        return unavailable(rid(request), exc.cause, retry_s)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
            for e in exc.errors()
        ]
        body = Problem(
            title="Unprocessable content",
            status=422,
            detail="; ".join(f"{e['field']}: {e['reason']}" for e in errors)[:2000],
            request_id=rid(request),
            errors=errors,
        )
        return JSONResponse(
            body.model_dump(exclude_none=True),
            status_code=422,
            media_type="application/problem+json",
        )


def _probes(ctx: ApiContext, store_registry: CollectorRegistry) -> APIRouter:
    probes = APIRouter(tags=["probes"])

    @probes.get("/healthz", response_model=HealthOut, summary="Liveness")
    async def healthz() -> HealthOut:
        """The process answers. No dependency is checked (see ``/readyz``)."""
        return HealthOut(status="ok")

    @probes.get(
        "/startupz",
        response_model=HealthOut,
        summary="Start-up done",
        responses={503: {"model": HealthOut, "description": "still starting"}},
    )
    async def startupz() -> Response:
        """200 once start-up finished (tables ready, bus connected), else 503."""
        if ctx.started:
            return JSONResponse(HealthOut(status="ok").model_dump())
        return JSONResponse(HealthOut(status="starting").model_dump(), status_code=503)

    @probes.get(
        "/readyz",
        response_model=HealthOut,
        summary="Readiness",
        responses={503: {"model": HealthOut, "description": "a dependency failed"}},
    )
    async def readyz() -> Response:
        """200 when the bus round trip, the database and the model router all answer."""
        results = await run_checks(ctx.checks(), ctx.settings.probe_timeout_s)
        ok = ctx.started and all(r.ok for r in results)
        body = HealthOut(
            status="ok" if ok else "fail",
            checks={r.name: CheckOut(**r.to_json()) for r in results},
        )
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @probes.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition format 0.0.4",
            }
        },
    )
    async def metrics_endpoint() -> Response:
        """This process's metrics and, from the database, the crew's (incidents, approvals,
        model calls, dead letters)."""
        live: dict[str, int] = {}
        for agent in ctx.agents.snapshot():
            live[agent["role"]] = live.get(agent["role"], 0) + (1 if agent["live"] else 0)
        for role, n in live.items():
            metrics.AGENTS_LIVE.labels(role).set(n)
        text = generate_latest(REGISTRY) + await run_in_threadpool(generate_latest, store_registry)
        return Response(text, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return probes
