"""The incident stream (server-sent events) on a real app and store: resuming, and ending."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import MessageRecord, Store
from plantcrew.store.access import AccessStore
from tests.api.conftest import Api, served, stream_lines_after


def blocks(text: str) -> list[dict[str, str]]:
    """The SSE blocks of ``text``: each a dict of its fields (comments left out)."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if ": " in line and not line.startswith(":")
        )
        if fields:
            out.append(fields)
    return out


def record(store: Store, n: int, *, start: int = 0) -> None:
    """``n`` stream-worthy messages (``incident.updated``) in the conversation log."""
    with store.tx() as s:
        for i in range(start, start + n):
            s.add(
                MessageRecord(
                    id=f"m{i}",
                    run_id="r1",
                    correlation_id="inc-1",
                    type="incident.updated",
                    source="coordinator",
                    subject="crew.events",
                    time=datetime.now(UTC),
                    plant_time=float(i),
                    body=json.dumps({"payload": {"incident_id": "inc-1", "status": "open"}}),
                )
            )


def test_a_stream_names_where_it_starts_so_a_reconnect_misses_nothing(api: Api) -> None:
    record(api.store, 3)
    # a client that came for what happens from now on, and saw nothing before it lost the line
    first = api.client.get("/api/v1/incidents/stream?max_s=0.2", headers=api.h("viewer"))
    assert first.status_code == 200
    opening = blocks(first.text)[0]
    assert opening["id"] == "3"  # EventSource keeps it as its Last-Event-ID
    record(api.store, 2, start=3)  # news while it was away
    again = api.client.get(
        "/api/v1/incidents/stream?limit=2",
        headers=api.h("viewer", **{"Last-Event-ID": opening["id"]}),
    )
    got = [b for b in blocks(again.text) if "data" in b]
    assert [json.loads(b["data"])["id"] for b in got] == ["m3", "m4"]


def test_a_stream_ends_when_its_token_is_revoked(tmp_path: Path, model_router: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'api.db'}")
    access = AccessStore(store)
    row, token = access.create_token("victor", "viewer")
    app = create_app(
        ApiSettings(sse_poll_s=0.05, sse_keepalive_s=3600, sse_auth_recheck_s=0.1),
        store=store,
        bus_url=f"memory://stream{uuid.uuid4().hex[:8]}",
        router=model_router,
    )
    hdr = {"Authorization": f"Bearer {token}"}
    try:
        with served(app) as client:
            # the stream ends (it stayed open, silent, before: a read timeout)
            rest = stream_lines_after(client, hdr, lambda: access.revoke(row.id))
            assert any("revoked" in line or "not valid" in line for line in rest), rest
            again = client.get("/api/v1/incidents/stream", headers=hdr)
            assert again.status_code == 401
    finally:
        store.dispose()
