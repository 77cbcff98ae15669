"""Running the service: uvicorn inside an asyncio loop we own, optionally beside a crew.

``EmbeddedServer`` is a uvicorn server that leaves signal handling to its host
(:func:`plantcrew.stopping.stop_on_signals`), for ``plantcrew serve`` and a worker process's
probes alike. uvicorn's own handling would not do: once shut down it restores the default
handler and raises the signal again, so the process is killed by SIGTERM (exit 143) before
its host has closed the bus and the database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers; stop it with ``should_exit = True`` (it then
    closes its listeners, lets requests in flight finish within the config's grace and runs
    the app's lifespan shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: Any, host: str, port: int, *, grace_s: float = 5.0) -> uvicorn.Config:
    """uvicorn settings for plantcrew: our logging (no uvicorn access log: the request
    middleware logs each request with its id), proxy headers off by default. When it stops,
    requests in flight get ``grace_s`` seconds to finish; then they are cancelled."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        # typed int by uvicorn; it only goes to asyncio.wait_for, which takes any float
        timeout_graceful_shutdown=cast(int, grace_s),
    )
