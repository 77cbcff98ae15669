"""Fixtures of the HTTP service tests: an app on a fresh SQLite file and memory bus, tokens of
every role, and (once per session) the model router and a finished scenario run."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from plantcrew.api import ApiSettings, create_app
from plantcrew.api.context import ApiContext
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import Action, Approval, Incident, Run, Store
from plantcrew.store.access import AccessStore

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "bearing-overheating-approval.yaml"


@pytest.fixture(scope="session")
def model_router() -> Any:
    from plantcrew.llm import ModelRouter

    return ModelRouter.from_file(
        DEFAULT_CONFIG_DIR / "models.yaml", playbooks_path=DEFAULT_CONFIG_DIR / "playbooks.yaml"
    )


@dataclass
class Api:
    """A running app with a client and a token per role."""

    app: FastAPI
    client: TestClient
    store: Store
    tokens: dict[str, str]

    @property
    def ctx(self) -> ApiContext:
        ctx: ApiContext = self.app.state.ctx
        return ctx

    def h(self, who: str, **extra: str) -> dict[str, str]:
        """Headers authenticating as ``who`` (a key of ``tokens``)."""
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}


@contextlib.contextmanager
def on_loopback(app: FastAPI) -> Iterator[str]:
    """``app`` served by a real uvicorn on a free loopback port (in a thread); yields its
    base URL once it answers, and stops it at the end."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[httpx.Client]:
    """An httpx client of ``app`` served :func:`on_loopback` (30 s read timeout: streams)."""
    with (
        on_loopback(app) as base,
        httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=30)) as client,
    ):
        yield client


def stream_lines_after(
    client: httpx.Client, headers: dict[str, str], action: Callable[[], object]
) -> list[str]:
    """Open the incident stream, check its opening, do ``action``, and read the stream to its
    end: its lines after the opening (a read timeout if it does not end)."""
    with client.stream("GET", "/api/v1/incidents/stream", headers=headers) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines).startswith("retry:")
        action()
        return list(lines)


def make_tokens(store: Store) -> dict[str, str]:
    access = AccessStore(store)
    spec = {
        "viewer": ("victor", "viewer", None),
        "operator": ("olga", "operator", None),
        "approver": ("alice", "approver", "shift_supervisor"),
        "approver2": ("bob", "approver", "operations_lead"),
        "approver_noplant": ("carl", "approver", None),
        "approver_wrongplant": ("dana", "approver", "maintenance_tech"),
        "admin": ("root", "admin", "plant_manager"),
    }
    return {
        k: access.create_token(name, role, approver_role=plant)[1]
        for k, (name, role, plant) in spec.items()
    }


@pytest.fixture
def api(tmp_path: Path, model_router: Any) -> Iterator[Api]:
    store = Store(f"sqlite:///{tmp_path / 'api.db'}")
    tokens = make_tokens(store)
    app = create_app(
        ApiSettings(burst=1000, rate_per_s=1000, sse_poll_s=0.05),
        store=store,
        bus_url=f"memory://api{uuid.uuid4().hex[:10]}",
        router=model_router,
    )
    with TestClient(app) as client:
        yield Api(app, client, store, tokens)
    store.dispose()


def seed_pending_approval(
    store: Store,
    *,
    roles: list[str] | None = None,
    run: dict[str, Any] | None = None,
) -> Approval:
    """A run, an incident awaiting approval of ``stop pump1`` and its pending approval
    (requested at plant 610 s, deadline 910 s). ``run``: fields of the Run row (default: a
    live run started now, so the deadline is 910 wall seconds away)."""
    from datetime import UTC, datetime

    run_id = f"run-{uuid.uuid4().hex[:12]}"
    inc_id = f"inc-{run_id[-8:]}-1"
    with store.tx() as s:
        fields = {"id": run_id, "scenario": "seeded", "started_at": datetime.now(UTC)}
        s.add(Run(**{**fields, **(run or {})}))
        s.add(
            Incident(
                id=inc_id,
                run_id=run_id,
                device_id="pump1",
                status="awaiting_approval",
                detected_at=600,
                opened_at=610,
            )
        )
        s.add(
            Action(
                id=f"act-{inc_id}",
                run_id=run_id,
                incident_id=inc_id,
                device_id="pump1",
                command="stop",
                hazard_class=2,
                status="pending_approval",
                idempotency_key=f"key-{inc_id}",
            )
        )
        approval = Approval(
            id=f"apr-act-{inc_id}",
            run_id=run_id,
            incident_id=inc_id,
            action_id=f"act-{inc_id}",
            hazard_class=2,
            approvers_required=1,
            approver_roles=roles or ["shift_supervisor", "operations_lead"],
            requested_at=610,
            deadline_at=910,
            token="0" * 64,
        )
        s.add(approval)
    return approval


@dataclass
class FinishedRun:
    db_url: str
    run_id: str
    passed: bool


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """The bearing-overheating scenario run once (scripted approval), in its own database."""
    from plantcrew.scenarios.runner import run_scenario

    db_url = f"sqlite:///{tmp_path_factory.mktemp('run') / 'run.db'}"
    result = asyncio.run(
        run_scenario(SCENARIO, bus_url=f"memory://run{uuid.uuid4().hex[:8]}", db_url=db_url)
    )
    return FinishedRun(db_url, result.run_id, result.passed)
