"""Request and response bodies of ``/api/v1`` (the OpenAPI schema is generated from these).

Times named ``*_at`` and ``plant_time`` are plant seconds since the run started (wall seconds
in live operation); ``time`` fields are UTC ISO 8601.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from plantcrew.api.redact import redact
from plantcrew.store import Action, Approval, Incident, Run


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentOut(_Out):
    """An incident and where its state machine stands."""

    id: str
    run_id: str
    device_id: str
    status: str
    outcome: str | None
    root_cause: str | None
    confidence: float | None
    detected_at: float
    opened_at: float
    resolved_at: float | None
    closed_at: float | None
    escalation_reason: str | None
    anomaly: dict[str, Any]
    data: dict[str, Any]
    version: int

    @classmethod
    def of(cls, i: Incident) -> IncidentOut:
        return cls(
            id=i.id,
            run_id=i.run_id,
            device_id=i.device_id,
            status=i.status,
            outcome=i.outcome,
            root_cause=i.root_cause,
            confidence=i.confidence,
            detected_at=i.detected_at,
            opened_at=i.opened_at,
            resolved_at=i.resolved_at,
            closed_at=i.closed_at,
            escalation_reason=i.escalation_reason,
            anomaly=redact(i.anomaly),
            data=redact(i.data),
            version=i.version,
        )


class ActionOut(_Out):
    """A change to the plant and its fate (``status``: proposed ... executed)."""

    id: str
    run_id: str
    incident_id: str
    device_id: str
    command: str
    parameters: dict[str, Any]
    hazard_class: int
    status: str
    approval_id: str | None
    rule_ids: list[str]
    reasons: list[str]
    executed_at: float | None

    @classmethod
    def of(cls, a: Action) -> ActionOut:
        return cls(
            id=a.id,
            run_id=a.run_id,
            incident_id=a.incident_id,
            device_id=a.device_id,
            command=a.command,
            parameters=a.parameters,
            hazard_class=a.hazard_class,
            status=a.status,
            approval_id=a.approval_id,
            rule_ids=a.rule_ids,
            reasons=a.reasons,
            executed_at=a.executed_at,
        )


class ApprovalOut(_Out):
    """A request for people's permission for one action (its token is never shown)."""

    id: str
    run_id: str
    incident_id: str
    action_id: str
    status: str
    hazard_class: int
    approvers_required: int
    approver_roles: list[str]
    decisions: list[dict[str, Any]]
    requested_at: float
    deadline_at: float | None
    decided_at: float | None
    consumed_at: float | None
    action: ActionOut | None = None

    @classmethod
    def of(cls, p: Approval, action: Action | None = None) -> ApprovalOut:
        return cls(
            id=p.id,
            run_id=p.run_id,
            incident_id=p.incident_id,
            action_id=p.action_id,
            status=p.status,
            hazard_class=p.hazard_class,
            approvers_required=p.approvers_required,
            approver_roles=p.approver_roles,
            decisions=p.decisions,
            requested_at=p.requested_at,
            deadline_at=p.deadline_at,
            decided_at=p.decided_at,
            consumed_at=p.consumed_at,
            action=ActionOut.of(action) if action is not None else None,
        )


class IncidentDetail(_Out):
    """An incident with its actions and approvals."""

    incident: IncidentOut
    actions: list[ActionOut]
    approvals: list[ApprovalOut]


class TimelineEvent(_Out):
    """One message of the conversation log (payload with approval tokens redacted)."""

    seq: int
    id: str
    type: str
    run_id: str | None
    incident_id: str | None
    source: str
    time: str
    plant_time: float
    payload: dict[str, Any]


class VoteIn(_In):
    """A person's reason for a decision (who decides comes from the API token)."""

    reason: str = Field("", max_length=2000)


class VoteOut(_Out):
    """A submitted decision; the Coordinator applies it on its next tick."""

    approval_id: str
    approver: str
    role: str
    approved: bool
    reason: str
    vote_seq: int
    note: str


class TelemetryIn(_In):
    """Telemetry batches: each ``{device_id, readings: [{device_id, sensor, value, unit, ts}]}``
    (``plantcrew.messages.TelemetryBatch``). Each item is validated on its own."""

    batches: list[Any] = Field(min_length=1, description="TelemetryBatch objects")
    run_id: str | None = Field(None, max_length=200, description="the live run, if any")


class FieldError(_Out):
    """Why one field of an item is invalid (``field`` is a dotted path inside the item)."""

    field: str
    reason: str


class RejectedItem(_Out):
    """An item that was not published, and the dead letter that keeps it."""

    index: int
    errors: list[FieldError]
    dead_letter_id: str | None


class TelemetryOut(_Out):
    """What happened to each batch: how many were published, which were rejected and why."""

    accepted: int
    rejected: list[RejectedItem]


class RunOut(_Out):
    """One execution of a scenario or of live operation."""

    id: str
    scenario: str
    seed: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    plant_time: float
    parent_run_id: str | None
    summary: dict[str, Any]

    @classmethod
    def of(cls, r: Run) -> RunOut:
        return cls(
            id=r.id,
            scenario=r.scenario,
            seed=r.seed,
            status=r.status,
            started_at=r.started_at,
            finished_at=r.finished_at,
            plant_time=r.plant_time,
            parent_run_id=r.parent_run_id,
            summary=r.summary,
        )


class RunExport(_Out):
    """A run to replay elsewhere: its messages in order with their plant times."""

    format: str = "plantcrew.replay/1"
    run: RunOut
    incidents: list[IncidentOut]
    actions: list[ActionOut]
    approvals: list[ApprovalOut]
    messages: list[dict[str, Any]]


class AgentOut(_Out):
    """An agent as its heartbeats show it: heard by this service on the bus (``source`` bus),
    or recorded by a Coordinator process in the database (``database``: no ``in_flight``
    nor plant time, which the database does not keep)."""

    agent_id: str
    role: str
    capabilities: list[str]
    in_flight: int | None
    stopping: bool
    last_heartbeat_age_s: float
    last_heartbeat_plant_time: str | None
    live: bool
    source: Literal["bus", "database"]


class DeploymentOut(_Out):
    """One model deployment: configuration and what the recorded calls say of it."""

    name: str
    model: str
    active: bool
    skipped_reason: str | None
    order: int | None
    calls: int
    failures: int
    fallbacks: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    mean_latency_ms: float | None


class ModelGroupOut(_Out):
    """A model group (purpose) and its deployments in failover order."""

    name: str
    description: str
    deployments: list[DeploymentOut]


class MeOut(_Out):
    """The caller, as its token says."""

    token_id: str
    name: str
    role: str
    approver_role: str | None
    permissions: list[str]


class CheckOut(_Out):
    ok: bool
    detail: str
    seconds: float


class HealthOut(_Out):
    """A probe's answer: ``ok`` or ``fail`` with each check's result."""

    status: str
    checks: dict[str, CheckOut] = {}
