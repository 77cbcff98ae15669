"""One-line descriptions of crew messages: who a subject addresses and what a payload says.

Pure functions over a message body as stored in the conversation log (``Message`` JSON), so
reading a run back needs neither the crew nor the model layer.
"""

from __future__ import annotations

import json
from typing import Any

RECEIVERS = {
    "crew.events": "coordinator",
    "crew.approvals": "people",
    "crew.incidents": "all",
    "crew.dlq": "dead-letters",
    "crew.control": "crew",
}


def receiver_of(subject: str) -> str:
    """Who a subject addresses: ``crew.tasks.diagnose`` → ``diagnose``, ``crew.events`` →
    ``coordinator``; an unknown subject is returned as it is."""
    if subject.startswith("crew.tasks."):
        return subject.rsplit(".", 1)[1]
    return RECEIVERS.get(subject, subject)


def _z(d: dict[str, Any]) -> str:
    try:
        return f"{d.get('sensor', '?')} {d.get('direction', '')} {float(d.get('z', 0.0)):+.1f}σ"
    except (TypeError, ValueError):
        return str(d.get("sensor", "?"))


def summarize(body: dict[str, Any]) -> str:
    """One line saying what a message's payload says (tolerates missing fields)."""
    p = body.get("payload") or {}
    kind = p.get("kind", body.get("type", ""))
    g = p.get
    if kind == "anomaly.detected":
        devs = ", ".join(_z(d) for d in (g("deviations") or [])[:3])
        return f"{g('device_id')} score {float(g('score') or 0):.2f}: {devs}"
    if kind == "anomaly.cleared":
        return f"{g('device_id')} back to normal"
    if kind == "task.assigned":
        return f"{g('capability')} for {g('incident_id')} (attempt {g('attempt')})"
    if kind == "diagnosis.made":
        conf = float(g("confidence") or 0)
        return f"root cause {g('root_cause')} ({conf:.2f}) {g('summary') or ''}".rstrip()
    if kind == "action.proposed":
        return (
            f"{g('command')} {g('device_id')} {g('parameters') or {}} (class {g('hazard_class')})"
        )
    if kind == "safety.decided":
        text = f"{g('verdict')} class {g('hazard_class')}: {'; '.join(g('reasons') or [])}"
        review = g("review")
        if isinstance(review, dict):
            taken = "followed" if review.get("followed") else "not followed"
            text += f" [model review recommends {review.get('recommended_verdict')}, {taken}]"
        return text
    if kind == "approval.requested":
        return (
            f"{g('command')} {g('device_id')} needs {g('approvers_required')} of "
            f"{g('approver_roles')}"
        )
    if kind == "approval.decided":
        verdict = "approved" if g("approved") else "refused"
        return f"{verdict} by {g('approver')}: {g('reason') or ''}".rstrip(": ")
    if kind == "action.executed":
        return f"{g('status')}: {g('detail') or ''}".rstrip(": ")
    if kind == "review.completed":
        return str(g("summary") or "")
    if kind == "incident.updated":
        reason = g("reason") or ""
        return f"{g('incident_id')} → {g('status')}" + (f" ({reason})" if reason else "")
    if kind == "task.failed":
        return str(g("reason") or "")
    if kind == "message.dead":
        return f"{g('original_subject')}: {g('reason')}"
    return json.dumps(p, default=str)[:120]


def fmt_plant_time(seconds: float) -> str:
    """``HH:MM:SS`` of plant seconds since the run started."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


__all__ = ["fmt_plant_time", "receiver_of", "summarize"]
