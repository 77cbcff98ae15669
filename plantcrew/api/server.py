"""Running the service: uvicorn inside an asyncio loop we own, optionally beside a crew.

``EmbeddedServer`` is a uvicorn server that leaves signal handling to its host (a worker
process serving only probes and metrics must keep its own SIGTERM handling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers; stop it with ``should_exit = True``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn settings for plantcrew: our logging (no uvicorn access log: the request
    middleware logs each request with its id), proxy headers off by default."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
