"""SQLModel tables: plantcrew's shared memory.

Times named ``*_at`` are plant seconds since the run started (floats) unless they are
``datetime`` columns, which are UTC wall or simulated-clock time. JSON columns hold plain
JSON-serialisable data. Every table is keyed so that a repeated write of the same thing
(a redelivered message, a restarted worker) is detected, never doubled.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _new_dict() -> dict[str, Any]:
    return {}


def _new_list() -> list[Any]:
    return []


# SQLModel builds a table object through pydantic's ``FieldInfo.get_default``, which asks
# ``inspect.signature`` of each default factory every time (does it take the validated data?).
# For the builtins ``dict`` and ``list`` that parses their text signature: about 60 µs each,
# more than half the cost of making an Approval. A factory that carries its signature answers
# at once.
_new_dict.__signature__ = _new_list.__signature__ = inspect.Signature()  # type: ignore[attr-defined]


def _json(**kw: Any) -> Any:
    return Field(default_factory=_new_dict, sa_column=Column(JSON, nullable=False), **kw)


def _json_list() -> Any:
    return Field(default_factory=_new_list, sa_column=Column(JSON, nullable=False))


class Run(SQLModel, table=True):
    """One execution of a scenario or of live operation."""

    id: str = Field(primary_key=True)
    scenario: str = ""
    scenario_path: str = ""
    seed: int = 0
    status: str = "running"  # running | passed | failed | completed | crashed
    bus_url: str = ""
    started_at: datetime
    finished_at: datetime | None = None
    plant_time: float = 0.0  # last checkpoint, plant seconds
    parent_run_id: str | None = Field(default=None, index=True)
    fork_from_message_id: str | None = None
    config: dict[str, Any] = _json()
    summary: dict[str, Any] = _json()


class Incident(SQLModel, table=True):
    """The crew's response to one fault episode on a device; a versioned state machine."""

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    device_id: str = Field(index=True)
    status: str = Field(default="open", index=True)
    outcome: str | None = None  # resolved | escalated, decided before the review
    root_cause: str | None = None
    confidence: float | None = None
    current_task_id: str | None = None
    detected_at: float = 0.0  # plant s of the first flagged reading
    opened_at: float = 0.0
    resolved_at: float | None = None
    closed_at: float | None = None
    escalation_reason: str | None = None
    anomaly: dict[str, Any] = _json()
    data: dict[str, Any] = _json()  # diagnosis, proposal, decision, review, degraded steps
    version: int = 1


class MessageRecord(SQLModel, table=True):
    """The conversation log: every crew message the Coordinator received or sent, in order."""

    __tablename__ = "message"
    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, index=True)
    run_id: str | None = Field(default=None, index=True)
    correlation_id: str | None = Field(default=None, index=True)
    causation_id: str | None = None
    type: str = Field(index=True)
    source: str
    subject: str
    time: datetime
    plant_time: float = 0.0
    body: str = Field(sa_column=Column(Text, nullable=False))


class OutboxEntry(SQLModel, table=True):
    """Transactional outbox: messages caused by a state change, published after commit."""

    __tablename__ = "outbox"
    seq: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True)
    subject: str
    body: str = Field(sa_column=Column(Text, nullable=False))
    published: bool = Field(default=False, index=True)


class TaskRecord(SQLModel, table=True):
    """One routed step of an incident and its fate."""

    __tablename__ = "task"
    id: str = Field(primary_key=True)
    incident_id: str = Field(index=True)
    capability: str
    attempt: int = 1
    status: str = "assigned"  # assigned | done | failed | superseded
    message_id: str
    assigned_at: float = 0.0
    deadline_at: float | None = None


class Action(SQLModel, table=True):
    """A change to the plant: proposed, judged, approved and (at most once) executed."""

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    incident_id: str = Field(index=True)
    device_id: str
    command: str
    parameters: dict[str, Any] = _json()
    hazard_class: int = 0
    status: str = "proposed"
    # proposed | approved | rejected | pending_approval | executing | executed | refused
    # | failed | expired | advisory
    idempotency_key: str = Field(unique=True)
    approval_id: str | None = None
    rule_ids: list[str] = _json_list()
    reasons: list[str] = _json_list()
    executed_at: float | None = None
    receipt: dict[str, Any] = _json()
    # the claim that may record the outcome: 1 for the first executor, +1 each time another
    # takes over an action left "executing" (plantcrew.store.execution)
    claim: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Approval(SQLModel, table=True):
    """Permission for one actuation; its token is consumed when the command is recorded."""

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    incident_id: str = Field(index=True)
    action_id: str = Field(index=True)
    status: str = Field(default="pending", index=True)  # pending|approved|rejected|expired
    hazard_class: int = 0
    approvers_required: int = 0
    approver_roles: list[str] = _json_list()
    decisions: list[dict[str, Any]] = _json_list()  # [{approver, role, approved, reason, at}]
    requested_at: float = 0.0
    deadline_at: float | None = None
    decided_at: float | None = None
    token: str | None = None
    consumed_at: float | None = None


class ApprovalVote(SQLModel, table=True):
    """A person's decision as submitted (CLI, API, scripted human); the Coordinator applies it."""

    __tablename__ = "approval_vote"
    seq: int | None = Field(default=None, primary_key=True)
    approval_id: str = Field(index=True)
    approver: str
    role: str
    approved: bool
    reason: str = ""
    processed: bool = Field(default=False, index=True)


class ModelCall(SQLModel, table=True):
    """One model call: who asked, which deployment answered, tokens, latency and cost."""

    __tablename__ = "model_call"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    incident_id: str | None = Field(default=None, index=True)
    task_id: str | None = None
    message_id: str | None = Field(default=None, index=True)
    agent: str = ""
    model_group: str = ""
    deployment: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    fallback: bool = False
    degraded_reason: str | None = None
    repaired: bool = False
    ok: bool = True
    error: str | None = None
    prompt: list[dict[str, Any]] = _json_list()
    response: str = Field(default="", sa_column=Column(Text, nullable=False))
    day: str = Field(default="", index=True)  # YYYY-MM-DD, for daily budgets


class ModelSpend(SQLModel, table=True):
    """The ``model_call`` rows of a day summed per budget scope, kept as they are written.

    ``scope`` is ``day`` (every call of the day) or ``agent:<name>``, where ``name`` is a
    call's agent id or any prefix of it that ends before a ``-`` (``operator-1`` counts in
    ``agent:operator`` and ``agent:operator-1``). See :mod:`plantcrew.store.spend`.
    """

    __tablename__ = "model_spend"
    day: str = Field(primary_key=True)  # YYYY-MM-DD, as model_call.day
    scope: str = Field(primary_key=True)
    usd: float = 0.0
    calls: int = 0


class AuditEntry(SQLModel, table=True):
    """Append-only, hash-chained audit log: ``hash = sha256(prev_hash + canonical entry)``."""

    __tablename__ = "audit"
    seq: int | None = Field(default=None, primary_key=True)
    time: datetime
    actor: str
    kind: str = Field(index=True)
    run_id: str | None = None
    incident_id: str | None = None
    data: dict[str, Any] = _json()
    prev_hash: str
    hash: str = Field(unique=True)


class Lesson(SQLModel, table=True):
    """Memory: a confirmed incident's root cause and deviation signature, or a correction."""

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str | None = Field(default=None, index=True)
    run_id: str | None = None
    root_cause: str
    signature: dict[str, float] = _json()  # sensor -> robust z at detection
    source: str = "confirmed"  # confirmed | feedback
    weight: float = 1.0
    note: str = ""


class DeadLetterRecord(SQLModel, table=True):
    """A dead-lettered or quarantined message, with its reason; nothing is dropped silently."""

    __tablename__ = "dead_letter"
    id: str = Field(primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    original_id: str | None = None
    original_subject: str
    reason: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    quarantined: bool = False
    raw: str = Field(default="", sa_column=Column(Text, nullable=False))
    time: datetime


class AgentRecord(SQLModel, table=True):
    """Last heartbeat of each agent, as a Coordinator process heard it (``last_seen``: UTC
    wall time it arrived); written at most once per agent per heartbeat interval
    (:mod:`plantcrew.crews.roster`), read by ``plantcrew agents`` and the API's ``/agents``."""

    __tablename__ = "agent"
    __table_args__ = (UniqueConstraint("agent_id"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_id: str
    role: str
    capabilities: list[str] = _json_list()
    last_seen: datetime
    stopping: bool = False
