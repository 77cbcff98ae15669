"""Checking a finished run against its scenario's expectations."""

from __future__ import annotations

from dataclasses import dataclass

from plantcrew.scenarios.schema import ActionExpectation, Scenario
from plantcrew.store import Action, Approval, Incident


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation: its name, whether it held, and what was seen."""

    name: str
    passed: bool
    detail: str


def _matches(a: Action, e: ActionExpectation) -> bool:
    if a.device_id != e.device or a.command != e.command:
        return False
    return e.parameters is None or all(a.parameters.get(k) == v for k, v in e.parameters.items())


def _fmt(actions: list[Action]) -> str:
    return (
        ", ".join(f"{a.command} {a.device_id} {a.parameters} [{a.status}]" for a in actions)
        or "none"
    )


def check(
    scenario: Scenario,
    incidents: list[Incident],
    actions: list[Action],
    approvals: list[Approval],
    *,
    plant_t: float | None = None,
) -> list[ExpectationResult]:
    """Evaluate every expectation the scenario gives (see ``Expectations``).

    ``plant_t`` is the plant time the run reached: a run that ended before its first fault
    (a CSV replay shorter than ``expect.fault_at_s``) fails a ``fault_at_s`` (or ``faults``)
    result saying so, since nothing measured against that fault was seen.
    """
    exp, out = scenario.expect, []
    t0 = scenario.first_fault_at or 0.0
    if plant_t is not None and scenario.first_fault_at is not None and plant_t < t0:
        name = "faults" if exp.fault_at_s is None else "fault_at_s"
        detail = f"the run ended at t={plant_t:g} s, before the fault at {t0:g} s"
        out.append(ExpectationResult(name, False, detail))
    first = incidents[0] if incidents else None
    if exp.incidents is not None:
        out.append(
            ExpectationResult(
                "incidents",
                len(incidents) == exp.incidents,
                f"expected {exp.incidents}, got {len(incidents)}",
            )
        )
    if exp.detected_within_s is not None:
        if first is None:
            out.append(ExpectationResult("detected_within_s", False, "nothing was detected"))
        else:
            delay = first.detected_at - t0
            ok = 0 <= delay <= exp.detected_within_s
            out.append(
                ExpectationResult(
                    "detected_within_s",
                    ok,
                    f"detected {delay:.0f} s after the fault (limit {exp.detected_within_s:g} s)"
                    + ("; before the fault: a false alarm" if delay < 0 else ""),
                )
            )
    if exp.root_cause is not None:
        got = first.root_cause if first else None
        out.append(
            ExpectationResult(
                "root_cause", got == exp.root_cause, f"expected {exp.root_cause}, diagnosed {got}"
            )
        )
    for name, wanted, status in (
        ("actions_executed", exp.actions_executed, {"executed"}),
        ("actions_blocked", exp.actions_blocked, {"rejected"}),
    ):
        if wanted is None:
            continue
        hits = [a for a in actions if a.status in status]
        missing = [e for e in wanted if not any(_matches(a, e) for a in hits)]
        extra = [a for a in hits if not any(_matches(a, e) for e in wanted)]
        ok = not missing and not extra
        detail = f"{name.split('_')[1]}: {_fmt(hits)}"
        if missing:
            detail += "; missing: " + ", ".join(f"{e.command} {e.device}" for e in missing)
        if extra:
            detail += "; unexpected: " + _fmt(extra)
        out.append(ExpectationResult(name, ok, detail))
    if exp.approved_by is not None:
        people = sorted(
            {
                d["approver"]
                for a in approvals
                for d in a.decisions
                if d.get("approved") and d.get("role") != "safety_officer"
            }
        )
        out.append(
            ExpectationResult(
                "approved_by",
                people == sorted(exp.approved_by),
                f"expected {sorted(exp.approved_by)}, got {people}",
            )
        )
    if exp.resolved_within_s is not None:
        resolved = [i for i in incidents if i.resolved_at is not None]
        if not resolved:
            out.append(ExpectationResult("resolved_within_s", False, "no incident was resolved"))
        else:
            took = resolved[0].resolved_at - t0  # type: ignore[operator]
            out.append(
                ExpectationResult(
                    "resolved_within_s",
                    took <= exp.resolved_within_s,
                    f"resolved {took:.0f} s after the fault (limit {exp.resolved_within_s:g} s)",
                )
            )
    if exp.escalated is not None:
        esc = [i for i in incidents if i.outcome == "escalated"]
        out.append(
            ExpectationResult(
                "escalated",
                bool(esc) == exp.escalated,
                "; ".join(f"{i.id}: {i.escalation_reason}" for i in esc) or "nothing escalated",
            )
        )
    if exp.escalation_reason_contains is not None:
        reasons = [i.escalation_reason or "" for i in incidents]
        ok = any(exp.escalation_reason_contains in r for r in reasons)
        out.append(
            ExpectationResult("escalation_reason_contains", ok, f"reasons: {reasons or 'none'}")
        )
    return out
