"""The compose file (infra/compose.yaml): command lines the CLI accepts, environment names
plantcrew reads, brokers that fsync every write, and the HTTP service whose metrics the alert
rules and dashboard read."""

from __future__ import annotations

from typing import Any

import yaml

from plantcrew.crews.config import ROLES
from tests.infra.support import INFRA, drain_s, env_read, parse_command

COMPOSE = INFRA / "compose.yaml"


def crew_services() -> dict[str, dict[str, Any]]:
    """The services that run the plantcrew image (after YAML merge keys)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {n: s for n, s in services.items() if s.get("image", "").startswith("plantcrew")}


def test_commands_parse_and_every_role_runs() -> None:
    roles: list[str] = []
    for name, svc in crew_services().items():
        params = parse_command(svc["command"])  # raises naming what the CLI does not accept
        roles += params.get("role") or []
        drain = drain_s(svc["command"], svc["environment"])
        if drain is not None:  # the drain ends before compose's SIGKILL
            assert drain < int(svc["stop_grace_period"].removesuffix("s")), name
    assert sorted(roles) == sorted(ROLES)
    commands = [s["command"][0] for s in crew_services().values()]
    assert commands.count("coordinator") == 1


def test_the_api_service_runs_and_listens_beyond_its_container() -> None:
    """``plantcrew serve`` exposes the figures from the database the alert rules and the
    dashboard read, and is where people approve; its default host, 127.0.0.1, would not be
    reachable through the published port."""
    (api,) = [s for s in crew_services().values() if s["command"][0] == "serve"]
    params = parse_command(api["command"])
    assert params["host"] == "0.0.0.0" and params["scenario"] is None
    assert any(p.endswith(f":{params['port']}") for p in api["ports"])


def test_environment_names_are_read_and_brokers_fsync() -> None:
    read = env_read()
    for name, svc in crew_services().items():
        env = svc["environment"]
        assert set(env) <= read, name
        assert env["PLANTCREW_BUS_URL"].endswith("?sync=always"), name
    nats = (INFRA / "nats.conf").read_text()
    assert "sync_interval: always" in nats
    assert "appendfsync always" in (INFRA / "redis.conf").read_text()
    for svc in yaml.safe_load(COMPOSE.read_text())["services"].values():
        for volume in svc.get("volumes", []):
            if volume.startswith("./"):
                assert (INFRA / volume.split(":")[0]).is_file(), volume


def test_every_crew_service_requires_the_approval_secret() -> None:
    """Compose refuses to start the crew without ``PLANTCREW_APPROVAL_SECRET`` (``${VAR:?msg}``)
    and says how to make one; each process would refuse it anyway on the broker bus, but one
    by one and in its container's log."""
    for name, svc in crew_services().items():
        value = svc["environment"].get("PLANTCREW_APPROVAL_SECRET", "")
        assert value.startswith("${PLANTCREW_APPROVAL_SECRET:?") and value.endswith("}"), name
        assert "openssl rand -hex 32" in value and "$" not in value[2:], name
