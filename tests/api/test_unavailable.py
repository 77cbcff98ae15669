"""The database goes away under a running service: requests get 503 with ``Retry-After`` and
a problem naming the cause, ``/readyz`` says not ready, ``/healthz`` stays up, an open event
stream ends cleanly saying why, and the service recovers when the database is back.

The app talks to the real PostgreSQL through a TCP forwarder on loopback that the test
stops (closing the listening socket and every forwarded connection) and starts again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import Store
from tests.api.conftest import make_tokens, served, stream_lines_after
from tests.forwarder import Forwarder, through


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fwd = Forwarder(("127.0.0.1", 5432))
    fwd.start()
    yield fwd
    fwd.stop()


def app_behind(
    forwarder: Forwarder, pg_url: str, router: Any, settings: ApiSettings
) -> tuple[FastAPI, Store, dict[str, str]]:
    """An app on the real PostgreSQL at ``pg_url`` through ``forwarder``: the app, its store
    (the caller disposes of it) and a viewer's Authorization header."""
    store = Store(through(pg_url, forwarder.port))
    tokens = make_tokens(store)
    bus = f"memory://down{uuid.uuid4().hex[:8]}"
    app = create_app(settings, store=store, bus_url=bus, router=router)
    return app, store, {"Authorization": f"Bearer {tokens['viewer']}"}


def test_database_down_is_503_with_retry_after_and_not_ready(
    pg_schema_url: str, forwarder: Forwarder, model_router: Any
) -> None:
    app, store, auth = app_behind(forwarder, pg_schema_url, model_router, ApiSettings())
    try:
        with TestClient(app) as client:
            assert client.get("/api/v1/incidents", headers=auth).status_code == 200
            assert client.get("/readyz").status_code == 200

            forwarder.stop()
            for path in ("/api/v1/incidents", "/api/v1/me", "/api/v1/approvals"):
                r = client.get(path, headers=auth)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert int(r.headers["retry-after"]) >= 1
                body = r.json()
                assert body["status"] == 503 and body["title"] == "Service unavailable"
                assert body["detail"].startswith("database unreachable"), body
                assert body["request_id"] == r.headers["x-request-id"]
            ready = client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["database"]["ok"] is False and checks["bus"]["ok"] is True
            assert "database unreachable" in checks["database"]["detail"]
            assert client.get("/healthz").status_code == 200

            forwarder.start()  # the database is back: so is the service
            assert client.get("/api/v1/incidents", headers=auth).status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        store.dispose()


def test_a_stream_ends_cleanly_when_the_database_goes_away(
    pg_schema_url: str, forwarder: Forwarder, model_router: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = ApiSettings(sse_poll_s=0.05, sse_keepalive_s=3600, unavailable_retry_s=7)
    app, store, auth = app_behind(forwarder, pg_schema_url, model_router, settings)
    try:
        with served(app) as client:
            # the stream ends with a last frame saying why (before: the response failed with
            # a traceback and the connection was cut mid-body)
            rest = stream_lines_after(client, auth, forwarder.stop)
            last = "\n".join(rest).strip().split("\n\n")[-1].splitlines()
            assert "retry: 7000" in last, rest  # EventSource waits Retry-After to reconnect
            assert last[-1].startswith(": stream ended: database unreachable"), rest
            again = client.get("/api/v1/incidents/stream", headers=auth)
            assert again.status_code == 503 and again.headers["retry-after"] == "7"
        captured = capfd.readouterr()
        logged = captured.out + captured.err  # structlog as the tests leave it: stdout
        assert "Traceback" not in logged, logged
        ended = [line for line in logged.splitlines() if "event stream ended" in line]
        assert len(ended) == 1 and "cause=unreachable" in ended[0], logged
    finally:
        store.dispose()
