"""Two runs side by side: their conversations aligned, and what differs highlighted.

:func:`diff_runs` aligns two runs' timelines incident by incident (incidents are matched by
their number in the run, ``inc-…-1`` with ``inc-…-1``; messages outside incidents form one
more group) on the sequence of (sender, message type) with difflib's longest-matching-block
alignment, so an inserted or removed step shows as ``added`` / ``removed`` and the messages
both runs sent are compared field by field in canonical form (:mod:`plantcrew.replay.canon`;
causes and wall-clock times aside), showing ``same`` or ``changed``.

Highlights compare, per incident and for the whole run: decisions (diagnosis, proposals,
safety verdicts, outcome), root causes, actions and their results, approvals, timings (plant
seconds: detected, opened, resolved, closed, time to resolve), and model usage (calls,
tokens, USD cost, latency in ms).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from plantcrew.replay.canon import Canon, NormalMessage, normalise_log
from plantcrew.replay.compare import FieldDiff, field_diffs
from plantcrew.replay.timeline import Step, Timeline, Usage

Op = Literal["same", "changed", "removed", "added"]
RUN_GROUP = "run"
IGNORED = ("cause", "time")


@dataclass(frozen=True)
class AlignedRow:
    """One row of the aligned timelines: ``a``'s step, ``b``'s, or both."""

    group: str
    op: Op
    a: Step | None
    b: Step | None
    differences: list[FieldDiff] = field(default_factory=list)

    @property
    def plant_time(self) -> float:
        step = self.a or self.b
        assert step is not None
        return step.plant_time

    def to_json(self) -> dict[str, Any]:
        def side(s: Step | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "seq": s.seq,
                "id": s.id,
                "plant_time": s.plant_time,
                "source": s.source,
                "type": s.type,
                "summary": s.summary,
            }

        return {
            "group": self.group,
            "op": self.op,
            "a": side(self.a),
            "b": side(self.b),
            "differences": [
                {"path": d.path, "a": d.original, "b": d.replayed} for d in self.differences
            ],
        }


@dataclass(frozen=True)
class Highlight:
    """One compared fact: its ``category`` (decision, root cause, action, approval, timing,
    tokens, cost, outcome, model), what it is about (``subject``: ``run`` or an incident)
    and its value in each run, as text. A ``volatile`` fact (model latency, a wall-clock
    measure) is shown but does not make two runs differ."""

    category: str
    subject: str
    name: str
    a: str
    b: str
    volatile: bool = False  # differs between any two runs (wall-clock latency)

    @property
    def differs(self) -> bool:
        return self.a != self.b

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "subject": self.subject,
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "differs": self.differs,
            "volatile": self.volatile,
        }


@dataclass
class RunDiff:
    """The comparison of run ``a`` with run ``b`` (see module doc)."""

    a: Timeline
    b: Timeline
    rows: list[AlignedRow]
    highlights: list[Highlight]

    @property
    def changed_rows(self) -> list[AlignedRow]:
        return [r for r in self.rows if r.op != "same"]

    @property
    def same(self) -> bool:
        return not self.changed_rows and not any(
            h.differs for h in self.highlights if not h.volatile
        )

    @property
    def relation(self) -> str:
        """How the runs are related (a fork of the other, siblings, or unrelated)."""
        a, b = self.a.run, self.b.run
        if b.parent_run_id == a.id:
            return f"{b.id} is a fork of {a.id} from message {b.fork_from_message_id}"
        if a.parent_run_id == b.id:
            return f"{a.id} is a fork of {b.id} from message {a.fork_from_message_id}"
        if a.parent_run_id and a.parent_run_id == b.parent_run_id:
            return f"both are forks of {a.parent_run_id}"
        return "independent runs"

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a.run.id,
            "b": self.b.run.id,
            "relation": self.relation,
            "same": self.same,
            "counts": {
                op: sum(1 for r in self.rows if r.op == op)
                for op in ("same", "changed", "removed", "added")
            },
            "highlights": [h.to_json() for h in self.highlights],
            "rows": [r.to_json() for r in self.rows],
        }


def _groups(t: Timeline, forms: list[NormalMessage]) -> dict[str, list[tuple[Step, NormalMessage]]]:
    canon = Canon(t.run.id)
    out: dict[str, list[tuple[Step, NormalMessage]]] = {}
    for step, form in zip(t.steps, forms, strict=True):
        label = canon.text(step.incident_id) if step.incident_id else RUN_GROUP
        out.setdefault(label, []).append((step, form))
    return out


def _compared(form: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in form.items() if k not in IGNORED}


def _align(
    label: str, xs: list[tuple[Step, NormalMessage]], ys: list[tuple[Step, NormalMessage]]
) -> list[AlignedRow]:
    ta = [(n.source, s.type) for s, n in xs]
    tb = [(n.source, s.type) for s, n in ys]
    rows: list[AlignedRow] = []

    def pair(i: int, j: int) -> None:
        (sa, fa), (sb, fb) = xs[i], ys[j]
        diffs = field_diffs(_compared(fa.form), _compared(fb.form))
        rows.append(AlignedRow(label, "changed" if diffs else "same", sa, sb, diffs))

    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                pair(i1 + k, j1 + k)
            continue
        i, j = i1, j1
        while op == "replace" and i < i2 and j < j2 and ta[i][1] == tb[j][1]:
            pair(i, j)
            i, j = i + 1, j + 1
        rows.extend(AlignedRow(label, "removed", xs[k][0], None) for k in range(i, i2))
        rows.extend(AlignedRow(label, "added", None, ys[k][0]) for k in range(j, j2))
    return rows


def _fmt_time(v: float | None) -> str:
    return "-" if v is None else f"{v:g} s"


def _usage_highlights(subject: str, ua: Usage, ub: Usage) -> list[Highlight]:
    return [
        Highlight("tokens", subject, "model calls", str(ua.calls), str(ub.calls)),
        Highlight(
            "tokens",
            subject,
            "tokens (prompt+completion)",
            f"{ua.tokens} ({ua.prompt_tokens}+{ua.completion_tokens})",
            f"{ub.tokens} ({ub.prompt_tokens}+{ub.completion_tokens})",
        ),
        Highlight("cost", subject, "cost (USD)", f"{ua.cost_usd:.6f}", f"{ub.cost_usd:.6f}"),
        Highlight(
            "timing",
            subject,
            "model latency (ms)",
            f"{ua.latency_ms:.1f}",
            f"{ub.latency_ms:.1f}",
            volatile=True,
        ),
    ]


def _incident_facts(t: Timeline, incident_id: str | None) -> dict[str, tuple[str, str]]:
    """name → (category, text) of one incident of ``t`` (empty texts when it is absent)."""
    inc = next((i for i in t.incidents if i.id == incident_id), None)
    steps = [s for s in t.steps if incident_id and s.incident_id == incident_id]
    canon = Canon(t.run.id)
    if inc is None:
        return {}
    facts: dict[str, tuple[str, str]] = {
        "device": ("decision", inc.device_id),
        "root cause": ("root cause", f"{inc.root_cause} ({(inc.confidence or 0):.2f})"),
        "outcome": ("outcome", f"{inc.status}" + (f" / {inc.outcome}" if inc.outcome else "")),
        "escalation": ("outcome", inc.escalation_reason or "-"),
        "detected at": ("timing", _fmt_time(inc.detected_at)),
        "opened at": ("timing", _fmt_time(inc.opened_at)),
        "resolved at": ("timing", _fmt_time(inc.resolved_at)),
        "closed at": ("timing", _fmt_time(inc.closed_at)),
        "time to resolve": (
            "timing",
            _fmt_time(None if inc.resolved_at is None else inc.resolved_at - inc.detected_at),
        ),
    }
    proposals = [s.summary for s in steps if s.type == "action.proposed"]
    verdicts = [
        f"{s.payload.get('verdict')} class {s.payload.get('hazard_class')} "
        f"{s.payload.get('rule_ids')}"
        for s in steps
        if s.type == "safety.decided"
    ]
    facts["proposals"] = ("decision", "; ".join(proposals) or "-")
    facts["safety verdicts"] = ("decision", "; ".join(verdicts) or "-")
    actions = [a for a in t.actions if a.incident_id == incident_id]
    facts["actions"] = (
        "action",
        "; ".join(
            f"{a.command} {a.device_id} {a.parameters} [{a.status}]"
            + (f" at {a.executed_at:g} s" if a.executed_at is not None else "")
            for a in actions
        )
        or "-",
    )
    approvals = [p for p in t.approvals if p.incident_id == incident_id]
    facts["approvals"] = (
        "approval",
        "; ".join(
            f"{canon.text(p.id)} {p.status}"
            + (
                " by " + ", ".join(d["approver"] for d in p.decisions if d.get("approved"))
                if any(d.get("approved") for d in p.decisions)
                else ""
            )
            for p in approvals
        )
        or "-",
    )
    models = sorted(
        {
            f"{s.source}: {c.get('model_group')}/{c.get('deployment')}"
            for s in steps
            for c in s.model_calls
        }
    )
    facts["models"] = ("model", "; ".join(models) or "-")
    return facts


def _highlights(a: Timeline, b: Timeline) -> list[Highlight]:
    out = [
        Highlight("outcome", RUN_GROUP, "status", a.run.status, b.run.status),
        Highlight("decision", RUN_GROUP, "incidents", str(len(a.incidents)), str(len(b.incidents))),
        Highlight("decision", RUN_GROUP, "messages", str(len(a.steps)), str(len(b.steps))),
        *_usage_highlights(RUN_GROUP, a.usage, b.usage),
    ]
    ca, cb = Canon(a.run.id), Canon(b.run.id)
    ids_a = {ca.text(i.id): i.id for i in a.incidents}
    ids_b = {cb.text(i.id): i.id for i in b.incidents}
    for label in sorted(set(ids_a) | set(ids_b), key=_incident_order):
        fa = _incident_facts(a, ids_a.get(label))
        fb = _incident_facts(b, ids_b.get(label))
        subject = label.replace("inc-<run>-", "incident ")
        for name in list(fa) + [n for n in fb if n not in fa]:
            cat = (fa.get(name) or fb[name])[0]
            out.append(
                Highlight(
                    cat,
                    subject,
                    name,
                    fa.get(name, (cat, "(absent)"))[1],
                    fb.get(name, (cat, "(absent)"))[1],
                )
            )
        ua = Usage.of(
            c for s in a.steps if s.incident_id == ids_a.get(label) for c in s.model_calls
        )
        ub = Usage.of(
            c for s in b.steps if s.incident_id == ids_b.get(label) for c in s.model_calls
        )
        out.extend(_usage_highlights(subject, ua, ub))
    return out


def _incident_order(label: str) -> tuple[int, str]:
    tail = label.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 30, label)


def diff_runs(a: Timeline, b: Timeline) -> RunDiff:
    """Align and compare two runs read back (see module doc). When either ran its agents as
    worker processes, senders are compared by role (see :func:`~plantcrew.replay.canon.
    normalise_log`)."""
    by_role = not (a.in_process and b.in_process)
    ga = _groups(a, normalise_log(a.steps, a.run.id, by_role=by_role))
    gb = _groups(b, normalise_log(b.steps, b.run.id, by_role=by_role))
    labels = list(ga) + [g for g in gb if g not in ga]
    rows: list[tuple[float, int, int, AlignedRow]] = []
    for gi, label in enumerate(labels):
        for pos, row in enumerate(_align(label, ga.get(label, []), gb.get(label, []))):
            rows.append((row.plant_time, gi, pos, row))
    rows.sort(key=lambda r: r[:3])
    return RunDiff(a, b, [r[3] for r in rows], _highlights(a, b))


__all__ = ["AlignedRow", "Highlight", "RunDiff", "diff_runs"]
