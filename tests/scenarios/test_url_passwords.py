"""Bus and database URLs carry passwords (``nats://user:pass@host``,
``redis://:pass@host``, ``postgresql://user:pass@host/db``): no run record, message, log or
probe shows one. :func:`plantcrew.settings.redacted_url` is the one place that hides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantcrew.errors import ConfigError, NotFoundError
from plantcrew.scenarios.runner import run_scenario
from plantcrew.settings import redacted_url
from plantcrew.store import Store
from tests.conftest import ROOT, bus_url_for

SHORT = ROOT / "tests" / "distributed" / "scenarios" / "short-bearing.yaml"
PASSWORD = "hunter2-not-for-logs"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("nats://u:p%40x@h:4222?namespace=a", "nats://u:***@h:4222?namespace=a"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://postgres@127.0.0.1:5432/x", "postgresql://postgres@127.0.0.1:5432/x"),
        ("sqlite:///a.db", "sqlite:///a.db"),
        ("memory://", "memory://"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


async def test_a_run_on_a_bus_with_a_password_never_stores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run row keeps the bus URL without its password (a database is read by more people
    than hold the broker's credentials, and runs are copied between databases); resuming such
    a run asks for the URL again instead of connecting without credentials."""
    monkeypatch.setenv("PLANTCREW_APPROVAL_SECRET", "5f0c9a2e7d41b8c3" * 4)
    bus = bus_url_for("nats").replace("nats://", f"nats://crew:{PASSWORD}@", 1)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = await run_scenario(SHORT, bus_url=bus, db_url=db, stop_after_s=5)
    store = Store(db)
    try:
        stored = store.get_run(result.run_id).bus_url
        assert PASSWORD not in stored and stored.startswith("nats://crew:***@127.0.0.1:4222")
    finally:
        store.dispose()
    with pytest.raises(ConfigError, match=r"ran on nats://crew:\*\*\*@.*give its bus URL again"):
        await run_scenario(SHORT, bus_url="", db_url=db, resume=result.run_id)


def test_a_missing_run_names_the_database_without_its_password() -> None:
    from tests.conftest import require_server

    require_server("postgresql", "127.0.0.1", 5432)
    store = Store("postgresql://postgres:pw-in-url@127.0.0.1:5432/test")
    try:
        with pytest.raises(NotFoundError) as caught:
            store.get_run("run-none")
    finally:
        store.dispose()
    assert "pw-in-url" not in str(caught.value) and "postgres:***@" in str(caught.value)


async def test_the_readiness_probe_names_the_bus_without_its_password() -> None:
    """``/readyz`` is unauthenticated (load balancers and kubelets call it): its bus check
    says which broker answered, never with the broker's password."""
    from plantcrew.api.health import BusProbe
    from plantcrew.bus import connect

    bus = await connect(bus_url_for("nats").replace("nats://", f"nats://crew:{PASSWORD}@", 1))
    probe = BusProbe("probe-test")
    try:
        await probe.attach(bus)
        detail = await probe.check()
    finally:
        await probe.detach()
        await bus.close()
    assert PASSWORD not in detail and detail.startswith("nats://crew:***@127.0.0.1:4222")


async def test_an_unknown_bus_scheme_is_named_without_the_password() -> None:
    from plantcrew.bus import connect
    from plantcrew.errors import BusError

    with pytest.raises(BusError) as caught:
        await connect(f"amqp://crew:{PASSWORD}@127.0.0.1")
    assert PASSWORD not in str(caught.value) and "amqp://crew:***@127.0.0.1" in str(caught.value)


def test_the_cli_resumes_a_run_on_the_bus_it_ran_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plantcrew run --resume RUN_ID`` without ``--bus`` continues on the run's own bus, so a
    run on a broker whose password is not stored asks for its URL again (exit 2), and with
    ``--bus`` it goes on there. Before, the CLI passed its ``--bus`` default, ``memory://``:
    the run resumed on an in-process bus, away from its broker, without a word."""
    import asyncio
    import json

    from typer.testing import CliRunner

    from plantcrew.cli import app

    monkeypatch.setenv("PLANTCREW_APPROVAL_SECRET", "5f0c9a2e7d41b8c3" * 4)
    bus = bus_url_for("nats").replace("nats://", f"nats://crew:{PASSWORD}@", 1)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    first = asyncio.run(run_scenario(SHORT, bus_url=bus, db_url=db, stop_after_s=5))

    res = CliRunner().invoke(app, ["run", str(SHORT), "--db", db, "--resume", first.run_id])
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "ran on nats://crew:***@" in res.stderr and "give its bus URL again" in res.stderr
    assert PASSWORD not in res.stdout + res.stderr

    args = ["run", str(SHORT), "--db", db, "--resume", first.run_id, "--bus", bus, "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["run_id"] == first.run_id and out["passed"], out
