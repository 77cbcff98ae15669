"""Authentication, roles and permissions of the API, and decisions taken from the token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from plantcrew.errors import StoreError
from plantcrew.store import ApprovalVote, AuditEntry
from plantcrew.store.access import (
    AGENT_PERMISSIONS,
    ROLE_PERMISSIONS,
    AccessStore,
    AuthenticationError,
    Permission,
    PermissionDenied,
    Role,
    agent_may,
    require_agent,
)
from tests.api.conftest import Api, seed_pending_approval

BATCH = {
    "device_id": "pump1",
    "readings": [{"device_id": "pump1", "sensor": "t", "value": 1.0, "ts": 0.0}],
}


def test_missing_or_bad_token_is_401_with_challenge(api: Api) -> None:
    r = api.client.get("/api/v1/incidents")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"].startswith("application/problem+json")
    good = api.tokens["viewer"]
    token_id = good.split("_")[1]
    for bad in ("nonsense", f"pct_{token_id}_{'x' * 43}", "pct_000000000000_" + "y" * 43):
        r = api.client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
        assert "invalid_token" in r.headers["www-authenticate"]
    assert api.client.get("/api/v1/incidents", headers=api.h("viewer")).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer  {t}", "Bearer   {t}", "bearer {t}", "BEARER  {t}", "Bearer {t}  "],
)
def test_bearer_takes_one_or_more_spaces_before_the_token(api: Api, header: str) -> None:
    """RFC 9110 11.4 / RFC 6750 2.1: ``credentials = auth-scheme 1*SP token68``, scheme
    case-insensitive. (FastAPI before 0.128.1 kept the extra spaces in the token: 401.)"""
    value = header.format(t=api.tokens["viewer"])
    r = api.client.get("/api/v1/me", headers={"Authorization": value})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "victor"


@pytest.mark.parametrize("header", ["Bearer\t{t}", "Bearer", "Bearer ", "Basic {t}", "{t}"])
def test_other_authorization_forms_are_refused(api: Api, header: str) -> None:
    value = header.format(t=api.tokens["viewer"])
    r = api.client.get("/api/v1/me", headers={"Authorization": value})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_revoked_and_expired_tokens_are_refused(api: Api) -> None:
    access = AccessStore(api.store)
    row, token = access.create_token("eve", "viewer")
    hdr = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/me", headers=hdr).status_code == 200
    access.revoke(row.id)
    r = api.client.get("/api/v1/me", headers=hdr)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    past = datetime.now(UTC) - timedelta(days=2)
    _, old = access.create_token("old", "viewer", ttl=timedelta(days=1), now=past)
    r = api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_only_the_hash_of_a_token_is_stored(api: Api) -> None:
    access = AccessStore(api.store)
    row, token = access.create_token("frank", "viewer")
    secret = token.split("_", 2)[2]
    stored = access.tokens()
    assert all(secret not in (t.secret_hash + t.name + t.note) for t in stored)
    assert access.authenticate(token).id == row.id
    with pytest.raises(AuthenticationError):
        access.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))


@pytest.mark.parametrize(
    ("who", "method", "path", "allowed"),
    [
        ("viewer", "GET", "/api/v1/incidents", True),
        ("viewer", "GET", "/api/v1/agents", True),
        ("viewer", "POST", "/api/v1/telemetry", False),
        ("viewer", "GET", "/api/v1/runs/none/export", False),
        ("operator", "POST", "/api/v1/telemetry", True),
        ("operator", "POST", "/api/v1/approvals/x/approve", False),
        ("approver", "POST", "/api/v1/telemetry", False),
        ("approver", "POST", "/api/v1/approvals/x/approve", True),
        ("admin", "POST", "/api/v1/telemetry", True),
    ],
)
def test_roles_grant_their_permissions_only(
    api: Api, who: str, method: str, path: str, allowed: bool
) -> None:
    body = {"batches": [BATCH]} if path.endswith("telemetry") else None
    r = api.client.request(method, path, headers=api.h(who), json=body)
    if allowed:
        assert r.status_code not in (401, 403), r.text
    else:
        assert r.status_code == 403, r.text
        assert "lacks" in r.json()["detail"]


def test_approval_identity_and_role_come_from_the_token(api: Api) -> None:
    appr = seed_pending_approval(api.store)
    # a body trying to name someone else is refused outright
    r = api.client.post(
        f"/api/v1/approvals/{appr.id}/approve",
        headers=api.h("approver"),
        json={"reason": "ok", "approver": "mallory", "role": "plant_manager"},
    )
    assert r.status_code == 422
    r = api.client.post(
        f"/api/v1/approvals/{appr.id}/approve", headers=api.h("approver"), json={"reason": "hot"}
    )
    assert r.status_code == 202, r.text
    assert r.json()["approver"] == "alice" and r.json()["role"] == "shift_supervisor"
    with api.store.tx() as s:
        votes = s.exec(select(ApprovalVote)).all()
        audit = s.exec(select(AuditEntry).where(AuditEntry.kind == "approval.vote_submitted"))
        audit_rows = audit.all()
    assert [(v.approver, v.role, v.approved, v.reason) for v in votes] == [
        ("alice", "shift_supervisor", True, "hot")
    ]
    assert audit_rows and audit_rows[0].data["token_id"] == api.tokens["approver"].split("_")[1]
    # the same person cannot vote twice while the first vote waits
    r = api.client.post(f"/api/v1/approvals/{appr.id}/reject", headers=api.h("approver"))
    assert r.status_code == 409


def test_plant_role_must_be_one_the_approval_allows(api: Api) -> None:
    appr = seed_pending_approval(api.store, roles=["shift_supervisor"])
    for who in ("approver_noplant", "approver_wrongplant", "approver2"):
        r = api.client.post(f"/api/v1/approvals/{appr.id}/approve", headers=api.h(who))
        assert r.status_code == 403, (who, r.text)
    with api.store.tx() as s:
        assert s.exec(select(ApprovalVote)).all() == []


def test_decisions_on_unknown_or_closed_approvals(api: Api) -> None:
    r = api.client.post("/api/v1/approvals/nope/approve", headers=api.h("approver"))
    assert r.status_code == 404
    appr = seed_pending_approval(api.store)
    with api.store.tx() as s:
        row = s.get(type(appr), appr.id)
        assert row is not None
        row.status = "expired"
        s.add(row)
    r = api.client.post(f"/api/v1/approvals/{appr.id}/approve", headers=api.h("approver"))
    assert r.status_code == 409 and "expired" in r.json()["detail"]


def test_approval_tokens_are_never_served(api: Api) -> None:
    appr = seed_pending_approval(api.store)
    r = api.client.get(f"/api/v1/approvals/{appr.id}", headers=api.h("viewer"))
    assert r.status_code == 200
    assert "0" * 64 not in r.text and "token" not in r.json()


def test_permission_table_is_least_privilege() -> None:
    assert Permission.TOKENS_MANAGE in ROLE_PERMISSIONS[Role.ADMIN]
    assert all(Permission.TOKENS_MANAGE not in ROLE_PERMISSIONS[r] for r in Role if r != "admin")
    assert ROLE_PERMISSIONS[Role.VIEWER] < ROLE_PERMISSIONS[Role.OPERATOR]
    assert Permission.APPROVALS_DECIDE not in ROLE_PERMISSIONS[Role.OPERATOR]
    actuators = [r for r, perms in AGENT_PERMISSIONS.items() if Permission.PLANT_ACTUATE in perms]
    assert actuators == ["operator"]
    assert not agent_may("diagnostic", Permission.PLANT_ACTUATE)
    with pytest.raises(PermissionDenied):
        require_agent("diagnostic", Permission.PLANT_ACTUATE)


def test_unknown_roles_are_refused(api: Api) -> None:
    access = AccessStore(api.store)
    with pytest.raises(PermissionDenied):
        access.create_token("x", "superuser")
    with pytest.raises(StoreError):
        access.create_token("x", "approver", approver_role="Shift Supervisor; DROP")


def test_only_roles_allowed_to_actuate_get_the_actuator(tmp_path: Path) -> None:
    """The crew hands the actuator only to agents whose role may actuate."""
    from datetime import UTC, datetime

    from plantcrew.agents import Asset, Policies
    from plantcrew.crews.config import CrewConfig
    from plantcrew.crews.crew import CrewParts, make_agent
    from plantcrew.detect import load_signatures
    from plantcrew.plant.actuators import SimulatedActuator
    from plantcrew.plant.clock import SimClock
    from plantcrew.plant.sim import SimulatedPlant
    from plantcrew.plant.spec import default_plant
    from plantcrew.settings import DEFAULT_CONFIG_DIR
    from plantcrew.store import Store

    cfg = CrewConfig.load(DEFAULT_CONFIG_DIR / "crew.yaml")
    plant = SimulatedPlant(default_plant(), [], 1, 1.0)
    parts = CrewParts(
        router=None,  # type: ignore[arg-type]
        policies=Policies.load(DEFAULT_CONFIG_DIR / "policies.yaml"),
        assets={"pump1": Asset(type="centrifugal_pump")},
        signatures=load_signatures(DEFAULT_CONFIG_DIR / "signatures.yaml"),
        actuator=SimulatedActuator(plant),
    )
    store = Store(f"sqlite:///{tmp_path / 'crew.db'}")
    clock = SimClock(datetime(2026, 1, 1, tzinfo=UTC))
    for role in cfg.roles:
        agent = make_agent(role, 1, None, clock, store, parts, cfg)  # type: ignore[arg-type]
        holds = any(v is parts.actuator for v in vars(agent).values())
        assert holds == agent_may(role, Permission.PLANT_ACTUATE), role
