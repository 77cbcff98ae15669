"""A run read back from the store: its conversation log with what each message links to.

``load_timeline(store, run_id)`` reads the run, every message of its conversation log in
order, the model calls behind each message (``model_call.message_id``), the incidents,
actions (with the actuator's receipts: the tool results), approvals and audit entries, and
returns a :class:`Timeline`. Nothing is re-executed: this is the run that happened.
Plant times are seconds since the run started; costs are USD; latencies milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select

from plantcrew.replay.describe import receiver_of, summarize
from plantcrew.replay.errors import ReplayError
from plantcrew.store import (
    Action,
    Approval,
    AuditEntry,
    Incident,
    MessageRecord,
    ModelCall,
    Run,
    Store,
)


@dataclass(frozen=True)
class Usage:
    """What a set of model calls used: count, tokens, USD cost and summed latency (ms)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            self.latency_ms + other.latency_ms,
        )

    @classmethod
    def of(cls, calls: Iterable[dict[str, Any]]) -> Usage:
        """Sum ``ModelCallInfo``-shaped dicts (``model_call`` rows dumped, or payload calls)."""
        total = cls()
        for c in calls:
            total = total + cls(
                1,
                int(c.get("prompt_tokens") or 0),
                int(c.get("completion_tokens") or 0),
                float(c.get("cost_usd") or 0.0),
                float(c.get("latency_ms") or 0.0),
            )
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass(frozen=True)
class Step:
    """One message of the conversation log and what it links to.

    ``index`` is its 0-based position in the run's log, ``seq`` the log's row number;
    ``incident_id`` is set when the message belongs to an incident (its correlation id, or
    the incident it caused: the anomaly that opened it). ``model_calls`` are the calls behind
    it (``ModelCallInfo`` JSON with ``id``/``agent``/``task_id`` where the store has rows).
    """

    index: int
    seq: int
    id: str
    plant_time: float
    time: str
    source: str
    receiver: str
    subject: str
    type: str
    correlation_id: str | None
    causation_id: str | None
    incident_id: str | None
    body: dict[str, Any]
    summary: str
    model_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.body.get("payload") or {})

    @property
    def usage(self) -> Usage:
        return Usage.of(self.model_calls)

    def to_json(self) -> dict[str, Any]:
        """The stored message (as ``Message`` JSON) plus ``plant_time`` and ``seq``."""
        return {**self.body, "plant_time": self.plant_time, "seq": self.seq}


def _calls_by_message(rows: Sequence[ModelCall]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.message_id:
            out.setdefault(r.message_id, []).append(r.model_dump())
    return out


def step_of(
    index: int, r: MessageRecord, incidents: set[str], calls: dict[str, list[dict[str, Any]]]
) -> Step:
    """A :class:`Step` of a log row (``calls``: model calls by message id)."""
    body = json.loads(r.body)
    corr = r.correlation_id
    incident = corr if corr in incidents else None
    model_calls = calls.get(r.id) or [
        dict(c) for c in (body.get("payload") or {}).get("model_calls", [])
    ]
    return Step(
        index=index,
        seq=r.seq or 0,
        id=r.id,
        plant_time=r.plant_time,
        time=str(body.get("time", "")),
        source=r.source,
        receiver=receiver_of(r.subject),
        subject=r.subject,
        type=r.type,
        correlation_id=corr,
        causation_id=r.causation_id,
        incident_id=incident,
        body=body,
        summary=summarize(body),
        model_calls=model_calls,
    )


@dataclass
class Timeline:
    """One run read back (see module doc). ``steps`` are in log order."""

    run: Run
    steps: list[Step]
    incidents: list[Incident]
    actions: list[Action]
    approvals: list[Approval]
    audit: list[AuditEntry]

    # ---- who and what ----------------------------------------------------------------------
    @property
    def in_process(self) -> bool:
        """Whether the run's agents ran in-process (named ``<role>-<n>``), not as worker
        processes on a broker (named after their host)."""
        return (self.run.bus_url or "memory://").startswith("memory:")

    @property
    def agents(self) -> list[str]:
        """Every sender in the log, in order of first appearance."""
        seen: dict[str, None] = {}
        for s in self.steps:
            seen.setdefault(s.source, None)
        return list(seen)

    @property
    def usage(self) -> Usage:
        """Model calls of the whole run."""
        return Usage.of(c for s in self.steps for c in s.model_calls)

    def usage_by_agent(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for s in self.steps:
            if s.model_calls:
                out[s.source] = out.get(s.source, Usage()) + s.usage
        return out

    def incident(self, incident_id: str) -> Incident:
        """The incident ``incident_id`` (or a unique prefix/suffix of it, e.g. ``1`` for
        the first); ReplayError when none or several match."""
        exact = [i for i in self.incidents if i.id == incident_id]
        if exact:
            return exact[0]
        found = [
            i
            for i in self.incidents
            if i.id.startswith(incident_id) or i.id.endswith(f"-{incident_id}")
        ]
        if len(found) != 1:
            known = ", ".join(i.id for i in self.incidents) or "none"
            raise ReplayError(f"no single incident matches {incident_id!r} (incidents: {known})")
        return found[0]

    def find(self, ref: str) -> Step:
        """The step named by a message id, a unique id prefix (8+ characters) or ``#SEQ``.

        Raises ReplayError when nothing or several steps match."""
        ref = ref.strip()
        if ref.startswith("#") and ref[1:].isdigit():
            hits = [s for s in self.steps if s.seq == int(ref[1:])]
        else:
            hits = [s for s in self.steps if s.id == ref]
            if not hits and len(ref) >= 8:
                hits = [s for s in self.steps if s.id.startswith(ref)]
        if len(hits) != 1:
            what = "no message" if not hits else f"{len(hits)} messages"
            raise ReplayError(f"{what} of run {self.run.id} match {ref!r}")
        return hits[0]

    def filter(
        self,
        *,
        agent: str | None = None,
        incident: str | None = None,
        types: Sequence[str] = (),
    ) -> list[Step]:
        """The steps sent by ``agent``, of ``incident`` (its messages and the anomaly that
        opened it) and of one of ``types`` (each ``*``-suffixed type is a prefix, e.g.
        ``task.*``); every given filter must hold."""
        inc_id = self.incident(incident).id if incident else None
        wanted = [t for t in types if t]
        out = []
        for s in self.steps:
            if agent and s.source != agent:
                continue
            if inc_id and s.incident_id != inc_id:
                continue
            if wanted and not any(
                s.type.startswith(t[:-1]) if t.endswith("*") else s.type == t for t in wanted
            ):
                continue
            out.append(s)
        return out

    def actions_of(self, step: Step) -> list[Action]:
        """The actions a step is about (its payload's ``action_id``), with their receipts."""
        action_id = step.payload.get("action_id")
        return [a for a in self.actions if a.id == action_id] if action_id else []

    def approvals_of(self, step: Step) -> list[Approval]:
        """The approvals a step is about (its payload's ``approval_id`` or ``action_id``)."""
        p = step.payload
        return [
            a
            for a in self.approvals
            if a.id == p.get("approval_id")
            or (p.get("action_id") and a.action_id == p.get("action_id"))
        ]


def _link_anomalies(steps: list[Step]) -> list[Step]:
    """Give the anomaly messages that opened or cleared an incident that incident's id."""
    by_id = {s.id: s for s in steps}
    owner: dict[str, str] = {}
    for s in steps:
        if s.incident_id and s.causation_id in by_id:
            cause = by_id[s.causation_id]
            if cause.incident_id is None and cause.type.startswith("anomaly."):
                owner.setdefault(cause.id, s.incident_id)
    if not owner:
        return steps
    return [
        Step(**{**s.__dict__, "incident_id": owner[s.id]}) if s.id in owner else s for s in steps
    ]


def load_timeline(store: Store, run_id: str) -> Timeline:
    """Read run ``run_id`` back (see module doc); NotFoundError when it does not exist."""
    run = store.get_run(run_id)
    with store.tx() as s:
        records = list(
            s.exec(
                select(MessageRecord)
                .where(col(MessageRecord.run_id) == run_id)
                .order_by(col(MessageRecord.seq))
            )
        )
        calls = list(
            s.exec(
                select(ModelCall).where(col(ModelCall.run_id) == run_id).order_by(col(ModelCall.id))
            )
        )
        audit = list(
            s.exec(
                select(AuditEntry)
                .where(col(AuditEntry.run_id) == run_id)
                .order_by(col(AuditEntry.seq))
            )
        )
    incidents = store.incidents(run_id)
    ids = {i.id for i in incidents}
    by_msg = _calls_by_message(calls)
    steps = _link_anomalies([step_of(i, r, ids, by_msg) for i, r in enumerate(records)])
    return Timeline(
        run=run,
        steps=steps,
        incidents=incidents,
        actions=store.actions(run_id=run_id),
        approvals=store.approvals(run_id=run_id),
        audit=audit,
    )


def records_after(store: Store, run_id: str, after_seq: int) -> list[MessageRecord]:
    """The run's log rows with ``seq > after_seq``, in order (for following a live run)."""
    with store.tx() as s:
        return list(
            s.exec(
                select(MessageRecord)
                .where(col(MessageRecord.run_id) == run_id, col(MessageRecord.seq) > after_seq)
                .order_by(col(MessageRecord.seq))
            )
        )


__all__ = [
    "Step",
    "Timeline",
    "Usage",
    "load_timeline",
    "records_after",
    "step_of",
]
