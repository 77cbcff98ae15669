"""The database goes away under a running service: requests get 503 with ``Retry-After`` and
a problem naming the cause, ``/readyz`` says not ready, ``/healthz`` stays up, and the
service recovers when the database is back.

The app talks to the real PostgreSQL through a TCP forwarder on loopback that the test
stops (closing the listening socket and every forwarded connection) and starts again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import Store
from tests.api.conftest import make_tokens
from tests.forwarder import Forwarder, through


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fwd = Forwarder(("127.0.0.1", 5432))
    fwd.start()
    yield fwd
    fwd.stop()


def test_database_down_is_503_with_retry_after_and_not_ready(
    pg_schema_url: str, forwarder: Forwarder, model_router: Any
) -> None:
    store = Store(through(pg_schema_url, forwarder.port))
    tokens = make_tokens(store)
    app = create_app(
        ApiSettings(),
        store=store,
        bus_url=f"memory://down{uuid.uuid4().hex[:8]}",
        router=model_router,
    )
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
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
