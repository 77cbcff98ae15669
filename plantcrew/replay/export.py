"""Exporting a run read back: JSON lines, and a self-contained HTML report.

``to_jsonl(timeline, steps)`` yields one JSON object per line, each with a ``record`` field:
``run`` first, then every ``message`` (the stored ``Message`` JSON under ``message``, with
``seq``, ``plant_time`` and ``incident_id``), every ``model_call`` behind those messages,
then ``incident``, ``action`` (with its actuator receipt), ``approval`` and ``audit`` rows.
Times that are datetimes are ISO 8601; plant times seconds since the run started.

``to_html(timeline, steps)`` is one HTML file with the run's data inlined and its CSS and
script inlined (no network, opens offline): the incidents, a swimlane per agent with a marker
per message, the timeline, and a details panel (envelope, payload, model calls with prompt and
response, actions and receipts, approvals) for the message clicked; ``#m-<seq>`` in the URL
selects a message on load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from plantcrew.replay.report_html import TEMPLATE
from plantcrew.replay.timeline import Step, Timeline


def _default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def _dump(obj: Any) -> str:
    return json.dumps(obj, default=_default, ensure_ascii=False)


def _row(row: Any) -> dict[str, Any]:
    return dict(row.model_dump())


def run_json(t: Timeline) -> dict[str, Any]:
    """The run row as JSON-ready data."""
    return json.loads(_dump(_row(t.run)))


def to_jsonl(t: Timeline, steps: Sequence[Step] | None = None) -> Iterator[str]:
    """JSON lines of a run (see module doc); ``steps`` (default: all) limits the messages
    and model calls exported."""
    chosen = list(t.steps if steps is None else steps)
    yield _dump({"record": "run", **_row(t.run)})
    for s in chosen:
        yield _dump(
            {
                "record": "message",
                "seq": s.seq,
                "plant_time": s.plant_time,
                "incident_id": s.incident_id,
                "message": s.body,
            }
        )
    for s in chosen:
        for c in s.model_calls:
            yield _dump({"record": "model_call", "message_id": s.id, **c})
    for kind, rows in (
        ("incident", t.incidents),
        ("action", t.actions),
        ("approval", t.approvals),
        ("audit", t.audit),
    ):
        for r in rows:
            yield _dump({"record": kind, **_row(r)})


def _call_json(c: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "agent",
        "model_group",
        "deployment",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "cost_usd",
        "fallback",
        "degraded_reason",
        "repaired",
        "ok",
        "error",
        "prompt",
        "response",
    )
    return {k: c.get(k) for k in keep}


def report_data(t: Timeline, steps: Sequence[Step] | None = None) -> dict[str, Any]:
    """What the HTML report shows, as JSON-ready data."""
    chosen = list(t.steps if steps is None else steps)
    first: dict[str, int] = {}
    for s in chosen:
        if s.incident_id:
            first.setdefault(s.incident_id, s.seq)
    usage = t.usage
    return json.loads(
        _dump(
            {
                "run": {
                    "id": t.run.id,
                    "scenario": t.run.scenario,
                    "seed": t.run.seed,
                    "status": t.run.status,
                    "plant_time": t.run.plant_time,
                    "parent_run_id": t.run.parent_run_id,
                    "fork_from_message_id": t.run.fork_from_message_id,
                    "started_at": t.run.started_at,
                    "finished_at": t.run.finished_at,
                },
                "usage": usage.to_json(),
                "usage_by_agent": {k: v.to_json() for k, v in t.usage_by_agent().items()},
                "agents": t.agents,
                "incidents": [
                    {
                        "id": i.id,
                        "device_id": i.device_id,
                        "status": i.status,
                        "outcome": i.outcome,
                        "root_cause": i.root_cause,
                        "confidence": i.confidence,
                        "detected_at": i.detected_at,
                        "resolved_at": i.resolved_at,
                        "escalation_reason": i.escalation_reason,
                        "first_seq": first.get(i.id),
                    }
                    for i in t.incidents
                ],
                "steps": [
                    {
                        "seq": s.seq,
                        "id": s.id,
                        "t": s.plant_time,
                        "time": s.time,
                        "source": s.source,
                        "receiver": s.receiver,
                        "subject": s.subject,
                        "type": s.type,
                        "incident": s.incident_id,
                        "cause": s.causation_id,
                        "summary": s.summary,
                        "payload": {k: v for k, v in s.payload.items() if k != "model_calls"},
                        "model_calls": [_call_json(c) for c in s.model_calls],
                        "actions": [_row(a) for a in t.actions_of(s)],
                        "approvals": [_row(a) for a in t.approvals_of(s)],
                    }
                    for s in chosen
                ],
            }
        )
    )


def to_html(t: Timeline, steps: Sequence[Step] | None = None) -> str:
    """The self-contained HTML report of a run (see module doc)."""
    data = _dump(report_data(t, steps))
    # "<" may not appear raw inside the script element; \u003c is the same JSON string
    safe = data.replace("<", "\\u003c")
    title = f"plantcrew run {t.run.id}"
    return TEMPLATE.replace("{{TITLE}}", _escape(title)).replace("{{DATA}}", safe)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


__all__ = ["report_data", "run_json", "to_html", "to_jsonl"]
