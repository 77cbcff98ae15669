"""Property-based tests of every operation against the OpenAPI schema (schemathesis):
no server error, status codes, content types, headers and bodies as documented."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import Store
from tests.api.conftest import make_tokens, seed_pending_approval


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_router: Any) -> dict[str, Any]:
    store = Store(f"sqlite:///{Path(tmp_path_factory.mktemp('schema')) / 's.db'}")
    tokens = make_tokens(store)
    seed_pending_approval(store)
    app = create_app(
        ApiSettings(rate_per_s=10_000, burst=10_000, sse_poll_s=0.01),
        store=store,
        bus_url=f"memory://schema{uuid.uuid4().hex[:8]}",
        router=model_router,
    )
    return {"app": app, "tokens": tokens}


def test_every_operation_conforms(served: dict[str, Any]) -> None:
    """Each operation, up to 10 generated cases each, authenticated as an admin."""
    api_schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", served["app"])
    headers = {"Authorization": f"Bearer {served['tokens']['admin']}"}
    seen = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        seen.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(
            max_examples=10,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            if case.headers and "Idempotency-Key" in case.headers:
                # a client's key names one request: reusing it for another is refused (422)
                case.headers["Idempotency-Key"] = uuid.uuid4().hex
            if case.path == "/api/v1/incidents/stream":
                case.query = {**(case.query or {}), "limit": 1, "since": 0, "max_s": 0.2}
            case.call_and_validate(headers=headers)

        check()
    assert "POST /api/v1/approvals/{approval_id}/approve" in seen
    assert "POST /api/v1/telemetry" in seen


def test_schema_is_versioned_and_secured(served: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    with TestClient(served["app"]) as c:
        doc = c.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert all(
        p.startswith("/api/v1/") or p in ("/healthz", "/readyz", "/startupz", "/metrics")
        for p in paths
    )
    assert "ApiToken" in doc["components"]["securitySchemes"]
    for path, ops in paths.items():
        for method, op in ops.items():
            if path.startswith("/api/v1/"):
                assert op.get("security"), (method, path)
                assert "429" in op["responses"], (method, path)


def test_error_answers_are_documented_as_sent(served: dict[str, Any]) -> None:
    """Errors are only ever sent as application/problem+json; 401 carries WWW-Authenticate,
    429 Retry-After (the schema said application/json too, and neither header)."""
    from fastapi.testclient import TestClient

    with TestClient(served["app"]) as c:
        doc = c.get("/api/v1/openapi.json").json()
    api = {p: ops for p, ops in doc["paths"].items() if p.startswith("/api/v1/")}
    for path, ops in api.items():
        for method, op in ops.items():
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    where = (method, path, code)
                    assert list(answer["content"]) == ["application/problem+json"], where
            assert "Retry-After" in op["responses"]["429"]["headers"], (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"], (method, path)
