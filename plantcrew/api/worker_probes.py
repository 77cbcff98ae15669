"""Probes and metrics of a worker process (``plantcrew worker``): the same ``/healthz``,
``/readyz``, ``/startupz`` and ``/metrics`` as the API service, on their own port.

Usage inside a worker's asyncio loop::

    probes = WorkerProbes(port=9100, checks={"bus": BusProbe check, "database": ...})
    await probes.start()            # serving; /startupz says 503 until ready_to_serve()
    probes.ready_to_serve()         # after the agents subscribed
    ...
    await probes.stop()

``/metrics`` serves this process's default Prometheus registry (bus deliveries, handler
latency, redeliveries, dead letters, model calls of this process).
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from plantcrew.api.health import Check, run_checks
from plantcrew.api.middleware import RequestContextMiddleware
from plantcrew.api.server import EmbeddedServer, server_config


def probe_app(checks: dict[str, Check], state: dict[str, bool], timeout_s: float = 2.0) -> FastAPI:
    """The probe routes over ``checks``; ``state["started"]`` drives ``/startupz``."""
    app = FastAPI(title="plantcrew worker probes", docs_url=None, redoc_url=None)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/startupz")
    async def startupz() -> JSONResponse:
        ok = state.get("started", False)
        return JSONResponse({"status": "ok" if ok else "starting"}, 200 if ok else 503)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        results = await run_checks(checks, timeout_s)
        ok = state.get("started", False) and all(r.ok for r in results)
        body = {"status": "ok" if ok else "fail", "checks": {r.name: r.to_json() for r in results}}
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return app


class WorkerProbes:
    """Serve :func:`probe_app` on ``host:port`` in the running loop (see module doc)."""

    def __init__(self, *, port: int, checks: dict[str, Check], host: str = "0.0.0.0") -> None:
        self.host, self.port = host, port
        self.state = {"started": False}
        self.server = EmbeddedServer(server_config(probe_app(checks, self.state), host, port))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; returns once the port is bound (raises OSError if it cannot be)."""
        self._task = asyncio.create_task(self._serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # re-raise why it stopped
                raise RuntimeError("probe server stopped before it started")
            await asyncio.sleep(0.01)

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit:  # uvicorn's way to say it could not bind (it logged why)
            raise OSError(
                f"cannot serve the probes on {self.host}:{self.port} (the port is taken or the "
                "address is not this host's; the log line above says which)"
            ) from None

    def ready_to_serve(self) -> None:
        """Start-up is done: ``/startupz`` answers 200 and ``/readyz`` runs its checks."""
        self.state["started"] = True

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
