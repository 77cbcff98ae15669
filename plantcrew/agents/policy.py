"""The Safety Officer's deterministic policy engine (``config/policies.yaml``).

A proposal is judged, in order, against: the asset registry (the device must exist), the
commands its device type allows (with their hazard class, 0 advisory .. 3 hazardous),
operating limits (device overrides its type), maximum rate of change against the current
reading, and interlocks against the current plant state. Any failed rule rejects, naming the
rule ids and reasons; otherwise the hazard class decides: up to ``auto_approve_max_class`` is
approved, above it a person must approve (``approvals`` gives how many and which roles).
A model may review the decision but can never turn a rejection into an approval.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantcrew.messages import SafetyVerdict
from plantcrew.settings import load_yaml_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Bounds(BaseModel):
    """Thresholds must be finite: NaN fails every comparison, so a NaN limit or interlock
    bound would silently never hold."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Limit(_Bounds):
    """Allowed range of a parameter, in the parameter's unit."""

    min: float | None = None
    max: float | None = None


class CommandRule(_Strict):
    """A command a device type accepts: its hazard class and the parameter it sets."""

    hazard_class: int = Field(ge=0, le=3)
    parameter: str | None = None
    max_step: float | None = Field(None, gt=0, description="largest change in one command")


class DeviceTypePolicy(_Strict):
    commands: dict[str, CommandRule] = {}
    limits: dict[str, Limit] = {}


class DevicePolicy(_Strict):
    """Overrides for one device: its own limits, and command rules that replace its type's
    (e.g. ``stop`` is class 3 on a pump that cools something critical)."""

    limits: dict[str, Limit] = {}
    commands: dict[str, CommandRule] = {}


class MaintenanceWindow(_Strict):
    """While ``start <= now < end`` (UTC) the listed devices are tagged out for maintenance:
    the crew may advise (``notify``) but actuates nothing on them."""

    id: str
    devices: list[str] = Field(min_length=1)
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _order(self) -> MaintenanceWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a timezone (e.g. 2026-01-01T06:00:00Z)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class StateCondition(_Bounds):
    """``device``'s ``sensor`` reading compared with a value."""

    device: str
    sensor: str
    above: float | None = None
    below: float | None = None

    def holds(self, state: dict[str, dict[str, float]]) -> bool | None:
        value = state.get(self.device, {}).get(self.sensor)
        if value is None:
            return None
        if self.above is not None and not value > self.above:
            return False
        return not (self.below is not None and not value < self.below)


class Interlock(_Bounds):
    """Forbid ``command`` on matching devices when ``parameter`` is below/above a value while
    ``while_state`` holds (unknown state counts as holding: fail safe)."""

    id: str
    description: str
    device_type: str | None = None
    device_role: str | None = None
    device: str | None = None
    command: str
    parameter: str | None = None
    below: float | None = None
    above: float | None = None
    while_state: StateCondition | None = None


class ApprovalClass(_Strict):
    approvers: int = Field(1, ge=1)
    roles: list[str] = Field(min_length=1)
    timeout_s: float = Field(300, gt=0)


class ApprovalPolicy(_Strict):
    auto_approve_max_class: int = Field(1, ge=0, le=3)
    classes: dict[int, ApprovalClass] = {}


class Policies(_Strict):
    """The whole ``policies.yaml``."""

    version: Literal[1] = 1
    device_types: dict[str, DeviceTypePolicy] = {}
    devices: dict[str, DevicePolicy] = {}
    interlocks: list[Interlock] = []
    maintenance_windows: list[MaintenanceWindow] = []
    approvals: ApprovalPolicy = ApprovalPolicy()

    @classmethod
    def load(cls, path: str | Path) -> Policies:
        """Load and validate; ConfigError names file, line and field."""
        return load_yaml_model(path, cls)


class Asset(_Strict):
    """A device in the asset registry: its type and, for valves, its role."""

    type: str
    role: str | None = None


class Judgement(BaseModel):
    """The policy engine's answer for one proposal."""

    verdict: SafetyVerdict
    hazard_class: int
    rule_ids: list[str] = []
    reasons: list[str] = []
    approvers_required: int = 0
    approver_roles: list[str] = []
    timeout_s: float | None = None


def approval_class(policies: Policies, hazard: int) -> ApprovalClass:
    """Who approves an action of hazard class ``hazard`` (0-3), and within what time.

    The class's own entry in ``approvals.classes``; else the nearest configured class above
    it (an auto-approvable action sent to people by a model review is approved as the next
    class up would be); else one ``shift_supervisor`` (two for class 3) within 300 s.
    """
    for klass in range(hazard, 4):
        if klass in policies.approvals.classes:
            return policies.approvals.classes[klass]
    return ApprovalClass(approvers=2 if hazard >= 3 else 1, roles=["shift_supervisor"])


def judge(
    policies: Policies,
    assets: dict[str, Asset],
    state: dict[str, dict[str, float]],
    *,
    device_id: str,
    command: str,
    parameters: dict[str, Any],
    proposed_class: int = 0,
    now: datetime | None = None,
) -> Judgement:
    """Judge one proposed action (see module doc) at ``now`` (UTC, for maintenance windows).
    Pure and deterministic."""
    rules: list[str] = []
    reasons: list[str] = []
    asset = assets.get(device_id)
    if asset is None:
        return Judgement(
            verdict=SafetyVerdict.REJECTED,
            hazard_class=3,
            rule_ids=["unknown-device"],
            reasons=[f"device {device_id!r} is not in the asset registry"],
        )
    type_policy = policies.device_types.get(asset.type, DeviceTypePolicy())
    device_policy = policies.devices.get(device_id, DevicePolicy())
    rule = (
        device_policy.commands.get(command)
        or type_policy.commands.get(command)
        or policies.device_types.get("*", DeviceTypePolicy()).commands.get(command)
    )
    if rule is None:
        return Judgement(
            verdict=SafetyVerdict.REJECTED,
            hazard_class=3,
            rule_ids=["command-not-allowed"],
            reasons=[f"{asset.type} {device_id!r} does not accept {command!r}"],
        )
    hazard = max(rule.hazard_class, proposed_class)
    current = state.get(device_id, {})
    if rule.parameter is not None:
        value = parameters.get(rule.parameter)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)  # NaN passes every comparison; infinity every step
        ):
            return Judgement(
                verdict=SafetyVerdict.REJECTED,
                hazard_class=hazard,
                rule_ids=["bad-parameter"],
                reasons=[f"{command} needs a number {rule.parameter!r}, got {value!r}"],
            )
        limit = device_policy.limits.get(rule.parameter) or type_policy.limits.get(rule.parameter)
        if limit is not None:
            if limit.min is not None and value < limit.min:
                rules.append(f"limit:{device_id}.{rule.parameter}")
                reasons.append(f"{rule.parameter}={value} is below the minimum {limit.min}")
            if limit.max is not None and value > limit.max:
                rules.append(f"limit:{device_id}.{rule.parameter}")
                reasons.append(f"{rule.parameter}={value} is above the maximum {limit.max}")
        present = current.get(rule.parameter)
        if (
            rule.max_step is not None
            and present is not None
            and abs(value - present) > rule.max_step
        ):
            rules.append(f"rate:{device_id}.{rule.parameter}")
            reasons.append(
                f"{rule.parameter} change {present:g}→{value:g} exceeds "
                f"the maximum step {rule.max_step:g}"
            )
    if now is not None and hazard > 0:
        for window in policies.maintenance_windows:
            if device_id in window.devices and window.start <= now < window.end:
                rules.append(f"maintenance:{window.id}")
                reasons.append(
                    f"{device_id} is tagged out for maintenance until "
                    f"{window.end.isoformat()}" + (f": {window.reason}" if window.reason else "")
                )
    for lock in policies.interlocks:
        if _interlock_applies(lock, asset, device_id, command, parameters, state):
            rules.append(lock.id)
            reasons.append(lock.description)
    if rules:
        return Judgement(
            verdict=SafetyVerdict.REJECTED, hazard_class=hazard, rule_ids=rules, reasons=reasons
        )
    if hazard <= policies.approvals.auto_approve_max_class:
        return Judgement(
            verdict=SafetyVerdict.APPROVED,
            hazard_class=hazard,
            rule_ids=[f"auto-approve:class-{hazard}"],
            reasons=[f"hazard class {hazard} is within automatic approval"],
        )
    klass = approval_class(policies, hazard)
    return Judgement(
        verdict=SafetyVerdict.NEEDS_HUMAN,
        hazard_class=hazard,
        rule_ids=[f"needs-approval:class-{hazard}"],
        reasons=[
            f"hazard class {hazard} needs {klass.approvers} approver(s) "
            f"with role {' or '.join(klass.roles)}"
        ],
        approvers_required=klass.approvers,
        approver_roles=klass.roles,
        timeout_s=klass.timeout_s,
    )


def _interlock_applies(
    lock: Interlock,
    asset: Asset,
    device_id: str,
    command: str,
    parameters: dict[str, Any],
    state: dict[str, dict[str, float]],
) -> bool:
    if lock.command != command:
        return False
    if lock.device is not None and lock.device != device_id:
        return False
    if lock.device_type is not None and lock.device_type != asset.type:
        return False
    if lock.device_role is not None and lock.device_role != asset.role:
        return False
    if lock.parameter is not None:
        value = parameters.get(lock.parameter)
        if not isinstance(value, int | float):
            return True  # cannot tell: fail safe
        if lock.below is not None and not value < lock.below:
            return False
        if lock.above is not None and not value > lock.above:
            return False
    if lock.while_state is None:
        return True
    holds = lock.while_state.holds(state)
    return holds is None or holds
