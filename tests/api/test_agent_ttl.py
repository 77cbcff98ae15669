"""The service calls an agent live by the Coordinator's own setting, crew.yaml's
``coordinator.agent_ttl_s``: it had its own (``PLANTCREW_API_AGENT_TTL_S``, 15 s) while the
Coordinator routes to an agent for 30 s, so /agents showed an agent silent that the Coordinator
still gave tasks. ``plantcrew agents`` and /agents must agree on every agent.

Real service (create_app, TestClient) and real ``plantcrew agents`` on one SQLite file, agents
recorded in its ``agent`` table as a Coordinator process writes them."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from plantcrew.api import ApiSettings, create_app
from plantcrew.cli import app as cli
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import AgentRecord, Store
from tests.api.conftest import make_tokens

AGES_S = (5.0, 20.0, 45.0)  # seconds since each agent's last heartbeat


def liveness(db_url: str, config_dir: Path) -> tuple[dict[str, bool], dict[str, bool]]:
    """Which agents are live by ``plantcrew agents --json`` and by the service's /agents,
    both reading ``config_dir`` (the CLI by --config-dir, the service by
    $PLANTCREW_CONFIG_DIR, as in a deployment)."""
    res = CliRunner().invoke(
        cli, ["agents", "--db", db_url, "--config-dir", str(config_dir), "--json"]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    by_cli = {a["agent_id"]: a["live"] for a in json.loads(res.stdout)}
    store = Store(db_url)
    tokens = make_tokens(store)
    app = create_app(
        ApiSettings(burst=1000, rate_per_s=1000),
        store=store,
        bus_url=f"memory://api{uuid.uuid4().hex[:10]}",
        load_router=False,
    )
    with TestClient(app) as client:
        r = client.get("/api/v1/agents", headers={"Authorization": f"Bearer {tokens['viewer']}"})
    store.dispose()
    assert r.status_code == 200, r.text
    return by_cli, {a["agent_id"]: a["live"] for a in r.json()}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A database whose ``agent`` table holds one agent per age of :data:`AGES_S`
    ('diagnostic-<age>s')."""
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    store = Store(url)
    now = datetime.now(UTC)
    store.record_agents(
        [
            AgentRecord(
                agent_id=f"diagnostic-{age:g}s",
                role="diagnostic",
                capabilities=["diagnose"],
                last_seen=now - timedelta(seconds=age),
            )
            for age in AGES_S
        ]
    )
    store.dispose()
    return url


def config_with_ttl(dest: Path, ttl_s: float | None) -> Path:
    """A copy of the shipped config folder, with crew.yaml's agent_ttl_s set to ``ttl_s``
    (None: as shipped)."""
    shutil.copytree(DEFAULT_CONFIG_DIR, dest)
    if ttl_s is not None:
        crew = yaml.safe_load((dest / "crew.yaml").read_text(encoding="utf-8"))
        crew["coordinator"]["agent_ttl_s"] = ttl_s
        (dest / "crew.yaml").write_text(yaml.safe_dump(crew), encoding="utf-8")
    return dest


@pytest.mark.parametrize(
    "ttl_s, live",
    [
        (None, {"diagnostic-5s", "diagnostic-20s"}),  # crew.yaml as shipped: 30 s
        (60, {"diagnostic-5s", "diagnostic-20s", "diagnostic-45s"}),
        (10, {"diagnostic-5s"}),
    ],
    ids=["shipped", "60s", "10s"],
)
def test_the_service_and_the_cli_call_the_same_agents_live(
    ttl_s: float | None,
    live: set[str],
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_dir = config_with_ttl(tmp_path / "config", ttl_s)
    monkeypatch.setenv("PLANTCREW_CONFIG_DIR", str(config_dir))
    by_cli, by_api = liveness(db_url, config_dir)
    assert {a for a, is_live in by_cli.items() if is_live} == live
    assert by_api == by_cli


def test_a_bad_crew_file_stops_the_service_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plantcrew.errors import ConfigError

    config_dir = config_with_ttl(tmp_path / "config", None)
    (config_dir / "crew.yaml").write_text("coordinator:\n  agent_ttl_s: -1\n", encoding="utf-8")
    monkeypatch.setenv("PLANTCREW_CONFIG_DIR", str(config_dir))
    store = Store(f"sqlite:///{tmp_path / 'plant.db'}")
    with pytest.raises(ConfigError, match=r"crew\.yaml:2 field 'coordinator\.agent_ttl_s'"):
        create_app(ApiSettings(), store=store, bus_url="memory://x", load_router=False)
    store.dispose()
