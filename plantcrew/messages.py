"""The ``Message`` envelope and its typed payloads.

The envelope follows CloudEvents 1.0 attribute names where one exists (``id``, ``type``,
``source``, ``subject``, ``time``) and adds plantcrew's extensions: ``run_id``,
``correlation_id`` (the incident, or the run), ``causation_id`` (the message that caused this
one), ``traceparent`` (W3C Trace Context) and ``schema_version``. The ``payload`` is a
discriminated union on its ``kind`` field, and ``type`` always equals ``payload.kind``.

Wire format: UTF-8 JSON (``Message.to_bytes`` / ``Message.from_bytes``). Invalid input raises
:class:`~plantcrew.errors.MessageValidationError` whose ``errors`` name each field path.

The bus runs pydantic on every publish and every delivery, so the envelope keeps that cheap:
its checks run inside pydantic-core (``AwareDatetime``, a ``pattern``, ``le``) but for one
(``type`` equals ``payload.kind``); the payload is a discriminated union on validation and
serialized by its own model (no union dispatch); and a message keeps its wire bytes once made
(``to_bytes``) or once received with every field given (``from_bytes``), so storing and
publishing it, or relaying a stored one, serializes it once. A bus publishes
``wire_bytes()``: the kept bytes, else new ones it does not keep (a message only published is
not held with a copy of its bytes).

Subjects (``Subjects``):

- ``telemetry.<device_id>``: readings, plain pub/sub (high rate, may be lost).
- ``crew.events``: everything addressed to the Coordinator; durable.
- ``crew.tasks.<capability>``: routed steps; durable, one queue group per capability.
- ``crew.control``: agent announcements and heartbeats; plain pub/sub.
- ``crew.approvals``: approval requests for people and consoles; plain pub/sub.
- ``crew.incidents``: incident state changes for consoles; plain pub/sub.
- ``crew.dlq``: dead letters, each carrying its reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from uuid6 import uuid7

from plantcrew.errors import MessageValidationError

SCHEMA_VERSION = 1
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_WIRE = "_wire"  # a message's cached wire bytes, in its __dict__ (never a field: not dumped,
# not compared, not in repr; pydantic ignores such keys, as for functools.cached_property)


class Capability(StrEnum):
    """What a step of an incident needs; roles declare the capabilities they have."""

    DETECT = "detect"
    DIAGNOSE = "diagnose"
    PROPOSE_ACTION = "propose_action"
    ASSESS_SAFETY = "assess_safety"
    ACTUATE = "actuate"
    REVIEW = "review"


class Subjects:
    """Subject names used on every bus backend (dot-separated tokens, NATS style)."""

    EVENTS = "crew.events"
    CONTROL = "crew.control"
    APPROVALS = "crew.approvals"
    INCIDENTS = "crew.incidents"
    DLQ = "crew.dlq"
    TELEMETRY_ALL = "telemetry.>"

    @staticmethod
    def telemetry(device_id: str) -> str:
        """Subject of one device's readings."""
        return f"telemetry.{device_id}"

    @staticmethod
    def tasks(capability: Capability | str) -> str:
        """Subject of the tasks that need ``capability``."""
        return f"crew.tasks.{Capability(capability).value}"


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- telemetry and detection -------------------------------------------------------------


class Reading(_Payload):
    """One sensor reading: ``value`` in ``unit`` at ``ts`` (plant seconds since run start)."""

    device_id: str = Field(min_length=1)
    sensor: str = Field(min_length=1)
    value: float = Field(allow_inf_nan=False)
    unit: str = ""
    ts: float = Field(ge=0, allow_inf_nan=False)


class TelemetryBatch(_Payload):
    """Readings of one device taken at the same plant time (``telemetry.reading``)."""

    kind: Literal["telemetry.reading"] = "telemetry.reading"
    device_id: str = Field(min_length=1)
    readings: list[Reading] = Field(min_length=1)
    row: int | None = Field(None, description="source row index for CSV replay, else None")


class Deviation(_Payload):
    """How far one sensor deviates from its calibrated baseline.

    ``z`` is the robust z-score ((value - median) / (1.4826 * MAD)); ``direction`` its sign.
    """

    sensor: str
    value: float
    baseline: float
    z: float
    direction: Literal["up", "down", "flat"]
    unit: str = ""


class AnomalyDetected(_Payload):
    """The Monitor saw a fault episode begin on a device (``anomaly.detected``)."""

    kind: Literal["anomaly.detected"] = "anomaly.detected"
    device_id: str
    score: float = Field(ge=0, le=1)
    ts: float = Field(ge=0, description="plant seconds of the first flagged reading")
    deviations: list[Deviation] = []
    detector: str = "robust-z"


class AnomalyCleared(_Payload):
    """The device's readings are back to normal (``anomaly.cleared``)."""

    kind: Literal["anomaly.cleared"] = "anomaly.cleared"
    device_id: str
    ts: float = Field(ge=0)


# ---- crew control ------------------------------------------------------------------------


class AgentHeartbeat(_Payload):
    """An agent announces itself and that it lives (``agent.heartbeat``)."""

    kind: Literal["agent.heartbeat"] = "agent.heartbeat"
    agent_id: str
    role: str
    capabilities: list[Capability]
    in_flight: int = 0
    stopping: bool = False


class Task(_Payload):
    """One routed step of an incident (``task.assigned``).

    ``input`` carries the step's data (anomaly, diagnosis, proposal, ...) as plain JSON;
    ``attempt`` counts reassignments, starting at 1.
    """

    kind: Literal["task.assigned"] = "task.assigned"
    task_id: str
    incident_id: str
    capability: Capability
    attempt: int = Field(1, ge=1)
    deadline_ts: float | None = Field(None, description="plant seconds; reassigned after it")
    input: dict[str, Any] = {}


class ModelCallInfo(_Payload):
    """One model call behind an agent's answer: what was asked, what came back, what it cost."""

    model_group: str
    deployment: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    fallback: bool = False
    degraded_reason: str | None = None
    repaired: bool = False
    ok: bool = True
    error: str | None = None
    prompt: list[dict[str, Any]] = []
    response: str = ""


class _TaskResult(_Payload):
    task_id: str
    incident_id: str
    agent_id: str
    model_calls: list[ModelCallInfo] = []


class Diagnosis(_TaskResult):
    """The Diagnostic's root cause with confidence in [0, 1] and its evidence."""

    kind: Literal["diagnosis.made"] = "diagnosis.made"
    root_cause: str
    confidence: float = Field(ge=0, le=1)
    evidence: list[str] = []
    summary: str = ""


class ActionProposal(_TaskResult):
    """The Operator proposes an action (a change to the plant) for an incident.

    ``command`` is an actuator command (``set_speed``, ``set_position``, ``stop``, ``start``,
    ``notify``), ``parameters`` its arguments, ``hazard_class`` 0 (advisory) to 3
    (hazardous) as proposed (the Safety Officer decides the class that applies).
    """

    kind: Literal["action.proposed"] = "action.proposed"
    action_id: str
    device_id: str
    command: str
    parameters: dict[str, Any] = {}
    hazard_class: int = Field(0, ge=0, le=3)
    rationale: str = ""


class SafetyVerdict(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_HUMAN = "needs_human"


SAFETY_STRICTNESS: dict[SafetyVerdict, int] = {
    SafetyVerdict.APPROVED: 0,
    SafetyVerdict.NEEDS_HUMAN: 1,
    SafetyVerdict.REJECTED: 2,
}
"""How strict a verdict is: a decision may only ever move up this order, never down."""


def stricter(a: SafetyVerdict, b: SafetyVerdict) -> SafetyVerdict:
    """The stricter of two verdicts (:data:`SAFETY_STRICTNESS`; ``a`` on a tie)."""
    return a if SAFETY_STRICTNESS[a] >= SAFETY_STRICTNESS[b] else b


class SafetyReview(BaseModel):
    """A model's written review of a Safety Officer decision: advice, never a ruling.

    ``recommended_verdict`` is what the model would decide; ``followed`` says whether the
    decision took it (only ever when it is stricter than the rules' verdict).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    text: str = Field(max_length=4000)
    concerns: list[str] = []
    recommended_verdict: SafetyVerdict
    followed: bool = False


class SafetyDecision(_TaskResult):
    """The Safety Officer's verdict on one proposal, with the rules that decided it.

    ``rule_verdict`` is the policy rules' own verdict (``None`` in decisions written before
    it existed: then ``verdict`` is the rules' verdict). ``verdict`` is never less strict
    than ``rule_verdict`` (:data:`SAFETY_STRICTNESS`); the Coordinator enforces it again.
    """

    kind: Literal["safety.decided"] = "safety.decided"
    action_id: str
    verdict: SafetyVerdict
    rule_verdict: SafetyVerdict | None = None
    review: SafetyReview | None = None
    hazard_class: int = Field(ge=0, le=3)
    rule_ids: list[str] = []
    reasons: list[str] = []
    approvers_required: int = 0
    approver_roles: list[str] = []
    approval_timeout_s: float | None = Field(None, gt=0, description="plant s to wait for people")


class ActionResult(_TaskResult):
    """The Operator ran (or refused to run) an approved action."""

    kind: Literal["action.executed"] = "action.executed"
    action_id: str
    status: Literal["executed", "already_executed", "refused", "failed"]
    detail: str = ""


class IncidentReview(_TaskResult):
    """The Reviewer's account of a closed incident and the lessons to keep."""

    kind: Literal["review.completed"] = "review.completed"
    summary: str
    root_cause_confirmed: bool = True
    lessons: list[str] = []


class TaskFailed(_TaskResult):
    """An agent could not do a task (it says why); the Coordinator decides what follows."""

    kind: Literal["task.failed"] = "task.failed"
    reason: str


# ---- people and incidents ----------------------------------------------------------------


class ApprovalRequest(_Payload):
    """A person must decide on an action (``approval.requested``)."""

    kind: Literal["approval.requested"] = "approval.requested"
    approval_id: str
    incident_id: str
    action_id: str
    device_id: str
    command: str
    parameters: dict[str, Any] = {}
    hazard_class: int
    approvers_required: int = 1
    approver_roles: list[str] = []
    deadline_ts: float


class ApprovalDecision(_Payload):
    """A person's decision on an approval request (``approval.decided``)."""

    kind: Literal["approval.decided"] = "approval.decided"
    approval_id: str
    approved: bool
    approver: str
    reason: str = ""


class IncidentUpdated(_Payload):
    """The Coordinator changed an incident's state (``incident.updated``)."""

    kind: Literal["incident.updated"] = "incident.updated"
    incident_id: str
    status: str
    reason: str = ""


class DeadLetter(_Payload):
    """A message that could not be processed or validated, with the reason (``message.dead``).

    ``raw`` is the original bytes decoded as UTF-8 with replacement; ``quarantined`` is True
    when it failed validation, False when its handler failed ``attempts`` times.
    """

    kind: Literal["message.dead"] = "message.dead"
    original_subject: str
    original_id: str | None = None
    reason: str
    attempts: int = 0
    quarantined: bool = False
    raw: str = ""


Payload = Annotated[
    TelemetryBatch
    | AnomalyDetected
    | AnomalyCleared
    | AgentHeartbeat
    | Task
    | Diagnosis
    | ActionProposal
    | SafetyDecision
    | ActionResult
    | IncidentReview
    | TaskFailed
    | ApprovalRequest
    | ApprovalDecision
    | IncidentUpdated
    | DeadLetter,
    Field(discriminator="kind"),
]
PAYLOAD_ADAPTER: TypeAdapter[Payload] = TypeAdapter(Payload)


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)


class Message(BaseModel):
    """The envelope of everything on the bus; frozen, validated on publish and on receive.

    Build one with :meth:`Message.new`, which sets ``type`` from the payload.
    Raises :class:`MessageValidationError` (never pydantic's own error) from the helpers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID = Field(default_factory=uuid7)
    type: str
    source: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    time: AwareDatetime = Field(default_factory=utcnow, description="UTC, timezone-aware")
    run_id: str | None = None
    correlation_id: str | None = None
    causation_id: UUID | None = None
    traceparent: str | None = Field(
        None, pattern=_TRACEPARENT.pattern, description="W3C trace context"
    )
    schema_version: int = SCHEMA_VERSION
    # validated as the discriminated union; serialized by the payload's own model, which is
    # what the union would pick (its dispatch costs as much as the payload itself)
    payload: SerializeAsAny[Payload]

    @model_validator(mode="after")
    def _check(self) -> Message:
        if self.type != self.payload.kind:
            raise ValueError(
                f"type {self.type!r} does not match payload kind {self.payload.kind!r}"
            )
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is newer than {SCHEMA_VERSION}")
        return self

    @classmethod
    def new(cls, payload: Any, *, source: str, subject: str, **fields: Any) -> Message:
        """Build a validated message around ``payload``; ``fields`` are envelope attributes."""
        try:
            return cls(type=payload.kind, payload=payload, source=source, subject=subject, **fields)
        except ValidationError as exc:
            raise _validation_error(exc) from None

    def reply(self, payload: Any, *, source: str, subject: str, **fields: Any) -> Message:
        """A message caused by this one: same run, correlation and trace; ``causation_id`` set."""
        base: dict[str, Any] = {
            "run_id": self.run_id,
            "correlation_id": self.correlation_id,
            "traceparent": self.traceparent,
            "causation_id": self.id,
            "time": self.time,
        }
        base.update(fields)
        return Message.new(payload, source=source, subject=subject, **base)

    def to_bytes(self) -> bytes:
        """UTF-8 JSON bytes of the whole message (made once, then kept: the message is frozen)."""
        wire: bytes | None = self.__dict__.get(_WIRE)
        if wire is None:
            wire = self.__dict__[_WIRE] = _TO_JSON(self)
        return wire

    def wire_bytes(self) -> bytes:
        """The same bytes as :meth:`to_bytes`: the kept ones if the message has them (it was
        stored, or received whole), else made anew and *not* kept.

        What a bus sends: a message published once and dropped (telemetry) is not held with a
        copy of its bytes while the publisher still holds the message (keeping them costs
        fresh memory, and its page faults, for every message of a batch built beforehand).
        """
        wire: bytes | None = self.__dict__.get(_WIRE)
        return _TO_JSON(self) if wire is None else wire

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Message:
        """Parse and validate; raises MessageValidationError naming each bad field path.

        When ``data`` (bytes) gives every field, the message keeps it as its wire bytes: a
        relay publishes what it read without serializing it again.
        """
        try:
            msg: Message = _VALIDATE_JSON(data)
        except ValidationError as exc:
            raw = data.encode() if isinstance(data, str) else data
            raise _validation_error(exc, raw) from None
        if isinstance(data, bytes) and len(msg.__pydantic_fields_set__) == _N_FIELDS:
            msg.__dict__[_WIRE] = data
        return msg

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Message:
        """A copy (see pydantic); with ``update``, its wire bytes are made anew."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            copied.__dict__.pop(_WIRE, None)
        return copied

    @classmethod
    def validate_python(cls, data: dict[str, Any]) -> Message:
        """Validate a dict (e.g. a row read back from the store)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from None


_TO_JSON = Message.__pydantic_serializer__.to_json
_VALIDATE_JSON = Message.__pydantic_validator__.validate_json
_N_FIELDS = len(Message.model_fields)


def _validation_error(exc: ValidationError, raw: bytes | None = None) -> MessageValidationError:
    errors = [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
    return MessageValidationError(errors, raw=raw)


__all__ = [
    "SAFETY_STRICTNESS",
    "SCHEMA_VERSION",
    "ActionProposal",
    "ActionResult",
    "AgentHeartbeat",
    "AnomalyCleared",
    "AnomalyDetected",
    "ApprovalDecision",
    "ApprovalRequest",
    "Capability",
    "DeadLetter",
    "Deviation",
    "Diagnosis",
    "IncidentReview",
    "IncidentUpdated",
    "Message",
    "ModelCallInfo",
    "Payload",
    "Reading",
    "SafetyDecision",
    "SafetyReview",
    "SafetyVerdict",
    "Subjects",
    "Task",
    "TaskFailed",
    "TelemetryBatch",
    "stricter",
    "utcnow",
]
