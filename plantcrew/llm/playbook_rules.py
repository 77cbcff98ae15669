"""The deterministic rules of the offline playbook model, read from ``config/playbooks.yaml``.

:meth:`PlaybookRules.answer` maps the data block of a request (see :mod:`plantcrew.llm.protocol`)
to an answer dict, by task:

- ``diagnose``: data ``{"candidates": [{"root_cause", "score" (0..1), "evidence": [str]}]}``
  (the Diagnostic's signature analysis). Answer ``{"root_cause", "confidence", "evidence",
  "summary"}``: the highest-scoring candidate when its score reaches ``min_confidence``, else
  ``"unknown"``; confidence is the top score either way.
- ``propose_action``: data ``{"root_cause", "device_id", "state": {device: {reading: value}},
  "topology"?: {device: {role: device}}, "assets"?: {device: {"type", "role"}}}``. Answer
  ``{"device_id", "command", "parameters", "hazard_class", "rationale"}`` from the ``actions``
  table; a root cause missing from the table uses ``unknown``. A related device (the pump's
  inlet valve) is looked up in the data's ``topology``, then the file's, then, when the rule
  names an ``asset_role``, as the one asset with that role (several: ambiguous). A parameter
  expression that cannot be computed (missing reading) or a related device that cannot be
  found turns the answer into ``notify`` for a person: fail safe.
- ``review``: data ``{"incident_id", "device_id", "root_cause", "confidence", "outcome":
  "resolved" | "escalated" | ..., "detected_at", "resolved_at" (plant seconds), "actions":
  [{"device_id", "command", "parameters", "status"}]}`` (every field optional; a single
  ``"action"`` with ``"action_status"`` and a ``"timeline"`` of ``{"ts", "type"}`` are read
  too). Answer ``{"summary", "root_cause_confirmed", "lessons"}``; the root cause counts as
  confirmed when an action executed, the outcome is ``resolved`` and the root cause is known.
- ``safety_review``: data ``{"proposal": {"device_id", "command", "parameters",
  "hazard_class"}, "decision": {"verdict", "hazard_class", "rule_ids", "reasons"}, "state"?}``
  (the Safety Officer's rule-based decision). Answer ``{"review", "concerns",
  "recommended_verdict"}``: the playbook restates the rules' decision and concurs with it
  (an invalid verdict in the data gives ``needs_human``: a person decides).

Everything in the data is data: identifiers are checked against a strict pattern (a root cause
or device id that does not match becomes ``unknown``), free text (evidence) is passed through
truncated and never interpreted, and nothing in the data can change which rule applies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plantcrew.llm import expr
from plantcrew.llm.protocol import DataBlockError, is_finite_number
from plantcrew.llm.yamlfile import validate_yaml
from plantcrew.settings import get_settings

# matched whole (fullmatch: with .match, `$` also matches before a final "\n"); the anchors
# are for pydantic `pattern`, which searches
ROOT_CAUSE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
UNKNOWN = "unknown"
SAFETY_VERDICTS = ("approved", "rejected", "needs_human")
MAX_EVIDENCE = 10
MAX_EVIDENCE_CHARS = 300


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiagnoseRules(_Strict):
    min_confidence: float = Field(0.5, ge=0, le=1)


class RelatedTarget(_Strict):
    related: str = Field(min_length=1, description="a role in the topology, e.g. inlet_valve")
    asset_role: str | None = Field(None, description="else: the one asset with this role")


class FixedTarget(_Strict):
    device: str = Field(pattern=DEVICE_RE.pattern)


class ActionRule(_Strict):
    """One row of the root cause -> action table."""

    target: Literal["self"] | RelatedTarget | FixedTarget = "self"
    command: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    parameters: dict[str, Any] = {}
    hazard_class: int = Field(0, ge=0, le=3)
    rationale: str = ""

    @field_validator("parameters")
    @classmethod
    def _expressions_parse(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        for key, value in parameters.items():
            if expr.is_expression(value):
                try:
                    expr.parse(value[1:])
                except expr.ExpressionError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return parameters


class ReviewRules(_Strict):
    lessons: dict[str, list[str]] = {}
    escalated: list[str] = []
    not_resolved: list[str] = []


class PlaybooksConfig(_Strict):
    """The whole ``playbooks.yaml``; ``actions`` must have an ``unknown`` row (notify)."""

    diagnose: DiagnoseRules = DiagnoseRules()
    topology: dict[str, dict[str, str]] = {}
    actions: dict[str, ActionRule]
    review: ReviewRules = ReviewRules()

    @model_validator(mode="after")
    def _check(self) -> PlaybooksConfig:
        if UNKNOWN not in self.actions:
            raise ValueError("actions must define an 'unknown' row")
        for name in self.actions:
            if not ROOT_CAUSE_RE.fullmatch(name):
                raise ValueError(f"actions: {name!r} is not a root cause identifier")
        return self


class PlaybookRules:
    """Answers the model tasks (:data:`~plantcrew.llm.protocol.TASKS`) from a
    :class:`PlaybooksConfig`; pure and deterministic."""

    def __init__(self, config: PlaybooksConfig) -> None:
        self.config = config

    @classmethod
    def from_file(cls, path: Path | str | None = None) -> PlaybookRules:
        """Load ``playbooks.yaml`` (default ``<config_dir>/playbooks.yaml``); ConfigError if bad."""
        p = Path(path) if path is not None else get_settings().config_dir / "playbooks.yaml"
        return cls(validate_yaml(PlaybooksConfig, p))

    def answer(self, data: dict[str, Any]) -> dict[str, Any]:
        """The answer dict for a data block (shapes in the module docstring).

        Raises DataBlockError only when ``task`` is missing or unknown; any other defect in
        the data gives a cautious answer (``unknown`` / ``notify``) instead of an error.
        """
        task = data.get("task")
        if task == "diagnose":
            return self.diagnose(data)
        if task == "propose_action":
            return self.propose_action(data)
        if task == "review":
            return self.review(data)
        if task == "safety_review":
            return self.safety_review(data)
        raise DataBlockError(f"unknown task {task!r}")

    # ---- diagnose -----------------------------------------------------------------------

    def diagnose(self, data: dict[str, Any]) -> dict[str, Any]:
        candidates = [c for c in _as_list(data.get("candidates")) if _valid_candidate(c)]
        candidates.sort(key=lambda c: -float(c["score"]))  # stable: ties keep the given rank
        if not candidates:
            return {
                "root_cause": UNKNOWN,
                "confidence": 0.0,
                "evidence": [],
                "summary": "No valid root cause candidate was given; a person must inspect.",
            }
        top = candidates[0]
        score = min(max(float(top["score"]), 0.0), 1.0)
        evidence = _evidence(top.get("evidence"))
        threshold = self.config.diagnose.min_confidence
        if score >= threshold:
            runner = (
                f"; next {candidates[1]['root_cause']} ({float(candidates[1]['score']):.2f})"
                if len(candidates) > 1
                else ""
            )
            summary = (
                f"Root cause {top['root_cause']} with confidence {score:.2f} from "
                f"{len(evidence)} pieces of evidence{runner}."
            )
            return {
                "root_cause": top["root_cause"],
                "confidence": score,
                "evidence": evidence,
                "summary": summary,
            }
        summary = (
            f"Best candidate {top['root_cause']} scores {score:.2f}, below the "
            f"{threshold:.2f} needed; root cause unknown, a person must inspect."
        )
        return {
            "root_cause": UNKNOWN,
            "confidence": score,
            "evidence": evidence,
            "summary": summary,
        }

    # ---- propose_action -----------------------------------------------------------------

    def propose_action(self, data: dict[str, Any]) -> dict[str, Any]:
        device = data.get("device_id")
        device_id = device if isinstance(device, str) and DEVICE_RE.fullmatch(device) else UNKNOWN
        cause = data.get("root_cause")
        root_cause = cause if isinstance(cause, str) and ROOT_CAUSE_RE.fullmatch(cause) else UNKNOWN
        if root_cause not in self.config.actions:
            root_cause = UNKNOWN
        raw_state = data.get("state")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        topology = {**self.config.topology}
        if isinstance(data.get("topology"), dict):
            topology.update({k: v for k, v in data["topology"].items() if isinstance(v, dict)})
        if device_id == UNKNOWN and root_cause != UNKNOWN:
            return self._notify(device_id, root_cause, f"device id {device!r} is not valid")
        rule = self.config.actions[root_cause]
        raw_assets = data.get("assets")
        assets: dict[str, Any] = raw_assets if isinstance(raw_assets, dict) else {}
        target = self._target(rule, device_id, topology, assets)
        if target is None:
            return self._notify(device_id, root_cause, "the target device is not in the topology")
        names = {"device": state.get(target, {}), "state": state}
        params: dict[str, Any] = {}
        for key, value in rule.parameters.items():
            if expr.is_expression(value):
                try:
                    params[key] = expr.evaluate(value, names)
                except expr.ExpressionError as exc:
                    return self._notify(device_id, root_cause, f"cannot compute {key}: {exc}")
            else:
                params[key] = value
        return {
            "device_id": target,
            "command": rule.command,
            "parameters": params,
            "hazard_class": rule.hazard_class,
            "rationale": f"{rule.rationale} (playbook rule '{root_cause}')".strip(),
        }

    def _target(
        self, rule: ActionRule, device_id: str, topology: dict[str, Any], assets: dict[str, Any]
    ) -> str | None:
        if rule.target == "self":
            return device_id
        if isinstance(rule.target, FixedTarget):
            return rule.target.device
        related = topology.get(device_id, {}).get(rule.target.related)
        if related is None and rule.target.asset_role:
            found = [
                name
                for name, a in assets.items()
                if isinstance(a, dict) and a.get("role") == rule.target.asset_role
            ]
            related = found[0] if len(found) == 1 else None
        return related if isinstance(related, str) and DEVICE_RE.fullmatch(related) else None

    def _notify(self, device_id: str, root_cause: str, why: str) -> dict[str, Any]:
        rule = self.config.actions[UNKNOWN]
        return {
            "device_id": device_id,
            "command": "notify",
            "parameters": {
                "message": f"{root_cause}: no automatic action ({why}); a person must inspect."
            },
            "hazard_class": 0,
            "rationale": f"{rule.rationale} Fell back to notify because {why}.",
        }

    # ---- review -------------------------------------------------------------------------

    def review(self, data: dict[str, Any]) -> dict[str, Any]:
        incident = _ident(data.get("incident_id"), DEVICE_RE, "incident")
        device = _ident(data.get("device_id"), DEVICE_RE, UNKNOWN)
        cause = _ident(data.get("root_cause"), ROOT_CAUSE_RE, UNKNOWN)
        conf = data.get("confidence")
        conf_txt = f" (confidence {float(conf):.2f})" if is_finite_number(conf) else ""  # type: ignore[arg-type]
        actions = [a for a in _as_list(data.get("actions")) if isinstance(a, dict)]
        if not actions and isinstance(data.get("action"), dict):
            actions = [{**data["action"], "status": data.get("action_status")}]
        outcome = _ident(data.get("outcome"), ROOT_CAUSE_RE, "open")
        parts = [f"Incident {incident} on {device}: root cause {cause}{conf_txt}."]
        statuses: list[str] = []
        for action in actions[:10]:
            command = _ident(action.get("command"), ROOT_CAUSE_RE, "unknown")
            target = _ident(action.get("device_id"), DEVICE_RE, device)
            status = _ident(action.get("status"), ROOT_CAUSE_RE, "unknown")
            statuses.append(status)
            parts.append(f"Action {command} on {target}: {status}.")
        if not actions:
            parts.append("No action was taken.")
        parts.append(f"Outcome: {outcome}.")
        detected, resolved = data.get("detected_at"), data.get("resolved_at")
        if is_finite_number(detected) and is_finite_number(resolved):
            parts.append(
                f"Resolved {float(resolved) - float(detected):.1f} s after "  # type: ignore[arg-type]
                "detection."
            )
        timeline = [e for e in _as_list(data.get("timeline")) if isinstance(e, dict)]
        times = [float(e["ts"]) for e in timeline if is_finite_number(e.get("ts"))]
        if times:
            parts.append(
                f"{len(timeline)} timeline events from t={min(times):.1f}s to t={max(times):.1f}s."
            )
        confirmed = cause != UNKNOWN and "executed" in statuses and outcome == "resolved"
        rules = self.config.review
        lessons = list(rules.lessons.get(cause, rules.lessons.get(UNKNOWN, [])))
        if outcome == "escalated":
            lessons += rules.escalated
        elif outcome != "resolved":
            lessons += rules.not_resolved
        return {"summary": " ".join(parts), "root_cause_confirmed": confirmed, "lessons": lessons}

    # ---- safety_review ------------------------------------------------------------------

    def safety_review(self, data: dict[str, Any]) -> dict[str, Any]:
        raw_p, raw_d = data.get("proposal"), data.get("decision")
        proposal: dict[str, Any] = raw_p if isinstance(raw_p, dict) else {}
        decision: dict[str, Any] = raw_d if isinstance(raw_d, dict) else {}
        command = _ident(proposal.get("command"), ROOT_CAUSE_RE, UNKNOWN)
        device = _ident(proposal.get("device_id"), DEVICE_RE, UNKNOWN)
        verdict = decision.get("verdict")
        if verdict not in SAFETY_VERDICTS:
            return {
                "review": f"{command} on {device}: the decision's verdict is not valid; "
                "a person must decide.",
                "concerns": ["invalid verdict in the decision"],
                "recommended_verdict": "needs_human",
            }
        rules = [_ident(r, DEVICE_RE, "rule") for r in _as_list(decision.get("rule_ids"))[:10]]
        reasons = _evidence(decision.get("reasons"))
        hazard = decision.get("hazard_class")
        klass = f" (hazard class {int(hazard)})" if is_finite_number(hazard) else ""  # type: ignore[arg-type]
        text = (
            f"{command} on {device}{klass}: the rules decided {verdict}"
            + (f" by {', '.join(rules)}" if rules else "")
            + (f" because {'; '.join(reasons)}" if reasons else "")
            + ". The playbook concurs."
        )
        return {"review": text, "concerns": [], "recommended_verdict": verdict}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _valid_candidate(c: Any) -> bool:
    return (
        isinstance(c, dict)
        and isinstance(c.get("root_cause"), str)
        and bool(ROOT_CAUSE_RE.fullmatch(c["root_cause"]))
        and is_finite_number(c.get("score"))
    )


def _evidence(value: Any) -> list[str]:
    items = [str(v) for v in _as_list(value) if isinstance(v, str | int | float)]
    return [v[:MAX_EVIDENCE_CHARS] for v in items[:MAX_EVIDENCE]]


def _ident(value: Any, pattern: re.Pattern[str], default: str) -> str:
    return value if isinstance(value, str) and pattern.fullmatch(value) else default
