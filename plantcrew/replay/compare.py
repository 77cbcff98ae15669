"""Comparing two runs' messages and actions in canonical form, field by field.

Used by exact replay (:mod:`plantcrew.replay.verify`), forks (:mod:`plantcrew.replay.rerun`)
and diffs (:mod:`plantcrew.replay.diff`); light to import (no model layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from plantcrew.replay.canon import Canon, NormalMessage
from plantcrew.replay.describe import fmt_plant_time
from plantcrew.store import Action

MAX_FIELD_DIFFS = 8
SNIPPET = 60
Kind = Literal["changed", "missing", "extra"]


@dataclass(frozen=True)
class FieldDiff:
    """One field that differs: its dotted ``path`` and both values (long text cut to the
    part around the first difference)."""

    path: str
    original: Any
    replayed: Any

    def describe(self) -> str:
        return f"{self.path}: {self.original!r} → {self.replayed!r}"


@dataclass(frozen=True)
class Divergence:
    """Where an agent's messages first differ.

    ``kind``: ``changed`` (both runs sent a message there, and they differ), ``missing``
    (the original sent one, the re-execution did not), ``extra`` (the reverse). ``position``
    is the 0-based position among the agent's messages; ``seq``/``index`` locate the
    original message in its log (the replayed one's for ``extra``).
    """

    agent: str
    kind: Kind
    position: int
    seq: int | None
    index: int
    plant_time: float
    type: str
    differences: list[FieldDiff] = field(default_factory=list)
    original_id: str | None = None
    replayed_id: str | None = None

    def headline(self) -> str:
        """Where it is and what kind of divergence, without the fields."""
        where = f"message #{self.seq}" if self.seq is not None else f"message {self.index}"
        head = (
            f"{where} at plant time {fmt_plant_time(self.plant_time)} "
            f"({self.plant_time:g} s), {self.agent}'s message {self.position + 1} "
            f"({self.type})"
        )
        if self.kind == "missing":
            return f"{head}: not sent by the re-execution"
        if self.kind == "extra":
            return f"{head}: sent by the re-execution only"
        return f"{head} differs"

    def describe(self) -> str:
        """:meth:`headline` and, for ``changed``, every differing field."""
        if self.kind != "changed":
            return self.headline()
        return self.headline() + ": " + "; ".join(d.describe() for d in self.differences)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "kind": self.kind,
            "position": self.position,
            "seq": self.seq,
            "index": self.index,
            "plant_time": self.plant_time,
            "type": self.type,
            "original_id": self.original_id,
            "replayed_id": self.replayed_id,
            "differences": [
                {"path": d.path, "original": d.original, "replayed": d.replayed}
                for d in self.differences
            ],
            "text": self.describe(),
        }


def _cut(a: str, b: str) -> tuple[str, str]:
    if len(a) <= SNIPPET * 2 and len(b) <= SNIPPET * 2:
        return a, b
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(0, i - SNIPPET // 2)
    return (
        ("…" if lo else "") + a[lo : i + SNIPPET] + ("…" if i + SNIPPET < len(a) else ""),
        ("…" if lo else "") + b[lo : i + SNIPPET] + ("…" if i + SNIPPET < len(b) else ""),
    )


def field_diffs(a: Any, b: Any, path: str = "", limit: int = MAX_FIELD_DIFFS) -> list[FieldDiff]:
    """The leaves where JSON values ``a`` and ``b`` differ (at most ``limit``)."""
    out: list[FieldDiff] = []

    def walk(x: Any, y: Any, p: str) -> None:
        if len(out) >= limit or x == y:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                walk(x.get(k, "<absent>"), y.get(k, "<absent>"), f"{p}.{k}" if p else str(k))
            return
        if isinstance(x, list) and isinstance(y, list):
            for i in range(max(len(x), len(y))):
                walk(
                    x[i] if i < len(x) else "<absent>",
                    y[i] if i < len(y) else "<absent>",
                    f"{p}[{i}]",
                )
            return
        if isinstance(x, str) and isinstance(y, str):
            x, y = _cut(x, y)
        out.append(FieldDiff(p or "<message>", x, y))

    walk(a, b, path)
    return out


def compare_logs(
    original: list[NormalMessage], replayed: list[NormalMessage], until: float | None = None
) -> list[Divergence]:
    """The first divergence of each agent, earliest first (see :class:`Divergence`)."""
    if until is not None:
        original = [m for m in original if m.plant_time <= until + 1e-9]
        replayed = [m for m in replayed if m.plant_time <= until + 1e-9]
    by_agent: dict[str, tuple[list[NormalMessage], list[NormalMessage]]] = {}
    for m in original:
        by_agent.setdefault(m.source, ([], []))[0].append(m)
    for m in replayed:
        by_agent.setdefault(m.source, ([], []))[1].append(m)
    found: list[Divergence] = []
    for agent, (old, new) in by_agent.items():
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else None
            b = new[i] if i < len(new) else None
            if a is not None and b is not None and a.form == b.form:
                continue
            if a is not None and b is not None:
                found.append(
                    Divergence(
                        agent,
                        "changed",
                        i,
                        a.seq,
                        a.index,
                        a.plant_time,
                        a.type,
                        field_diffs(a.form, b.form),
                        a.id,
                        b.id,
                    )
                )
            elif a is not None:
                found.append(
                    Divergence(
                        agent, "missing", i, a.seq, a.index, a.plant_time, a.type, [], a.id, None
                    )
                )
            elif b is not None:
                found.append(
                    Divergence(
                        agent, "extra", i, b.seq, b.index, b.plant_time, b.type, [], None, b.id
                    )
                )
            break
    found.sort(key=lambda d: (d.plant_time, d.index))
    return found


def action_form(a: Action, canon: Canon) -> dict[str, Any]:
    """An action (with its actuator receipt) in canonical form."""
    return canon.value(
        {
            "id": a.id,
            "device_id": a.device_id,
            "command": a.command,
            "parameters": a.parameters,
            "hazard_class": a.hazard_class,
            "status": a.status,
            "rule_ids": a.rule_ids,
            "reasons": a.reasons,
            "executed_at": a.executed_at,
            "receipt": a.receipt,
            "approval_id": a.approval_id,
        }
    )


def compare_actions(
    original: list[Action], original_run: str, replayed: list[Action], replayed_run: str
) -> list[str]:
    """Differences between two runs' actions and receipts, one line each."""
    a_canon, b_canon = Canon(original_run), Canon(replayed_run)
    old = {f["id"]: f for f in (action_form(x, a_canon) for x in original)}
    new = {f["id"]: f for f in (action_form(x, b_canon) for x in replayed)}
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"action {key}: not taken by the re-execution")
        elif key not in old:
            out.append(f"action {key}: taken by the re-execution only")
        elif old[key] != new[key]:
            out.append(
                f"action {key}: " + "; ".join(d.describe() for d in field_diffs(old[key], new[key]))
            )
    return out


__all__ = [
    "Divergence",
    "FieldDiff",
    "action_form",
    "compare_actions",
    "compare_logs",
    "field_diffs",
]
