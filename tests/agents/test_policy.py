"""The Safety Officer's policy engine, rule by rule, on the shipped config/policies.yaml."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from plantcrew.agents.policy import Asset, Judgement, Policies, judge
from plantcrew.errors import ConfigError
from plantcrew.messages import SafetyVerdict

ROOT = Path(__file__).resolve().parents[2]
POLICIES = Policies.load(ROOT / "config" / "policies.yaml")
ASSETS = {
    "pump1": Asset(type="centrifugal_pump"),
    "inlet_valve": Asset(type="valve", role="inlet"),
    "outlet_valve": Asset(type="valve", role="outlet"),
    "tank1": Asset(type="tank"),
}
RUNNING = {"pump1": {"speed_pct": 100.0}, "outlet_valve": {"position_pct": 100.0}}


def j(
    device: str,
    command: str,
    params: dict[str, Any] | None = None,
    *,
    state: dict[str, dict[str, float]] | None = None,
    proposed: int = 0,
    policies: Policies = POLICIES,
    now: datetime | None = None,
) -> Judgement:
    return judge(
        policies,
        ASSETS,
        RUNNING if state is None else state,
        device_id=device,
        command=command,
        parameters=params or {},
        proposed_class=proposed,
        now=now,
    )


def test_routine_speed_change_is_approved_by_policy() -> None:
    out = j("pump1", "set_speed", {"speed_pct": 80})
    assert out.verdict is SafetyVerdict.APPROVED and out.hazard_class == 1


@pytest.mark.parametrize(
    ("speed", "rule"), [(40, "limit:pump1.speed_pct"), (120, "limit:pump1.speed_pct")]
)
def test_limits(speed: float, rule: str) -> None:
    out = j("pump1", "set_speed", {"speed_pct": speed})
    assert out.verdict is SafetyVerdict.REJECTED and rule in out.rule_ids


def test_rate_of_change_is_limited_against_the_current_reading() -> None:
    out = j("pump1", "set_speed", {"speed_pct": 60})  # 100 -> 60 is a 40 % step, max 30
    assert out.verdict is SafetyVerdict.REJECTED
    assert out.rule_ids == ["rate:pump1.speed_pct"]
    assert "exceeds the maximum step 30" in out.reasons[0]


def test_interlock_forbids_closing_outlet_while_pump_runs() -> None:
    out = j("outlet_valve", "set_position", {"position_pct": 10})
    assert out.verdict is SafetyVerdict.REJECTED
    assert out.rule_ids == ["outlet-closed-while-pump-runs"]
    stopped = {"pump1": {"speed_pct": 0.0}}
    assert (
        j("outlet_valve", "set_position", {"position_pct": 10}, state=stopped).verdict
        is SafetyVerdict.APPROVED
    )


def test_interlock_fails_safe_when_state_is_unknown() -> None:
    out = j("outlet_valve", "set_position", {"position_pct": 10}, state={})
    assert out.verdict is SafetyVerdict.REJECTED


def test_unknown_device_and_command_are_rejected() -> None:
    assert j("pump9", "stop").rule_ids == ["unknown-device"]
    assert j("tank1", "set_speed", {"speed_pct": 50}).rule_ids == ["command-not-allowed"]
    assert j("pump1", "open_every_valve").verdict is SafetyVerdict.REJECTED


def test_missing_parameter_is_rejected() -> None:
    out = j("pump1", "set_speed", {"speed": 80})
    assert out.rule_ids == ["bad-parameter"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_parameter_that_is_not_finite_is_rejected(value: float) -> None:
    # NaN compares false with every limit and step, so without a check it passed them all
    out = j("pump1", "set_speed", {"speed_pct": value}, state={"pump1": {"speed_pct": 80}})
    assert out.verdict is SafetyVerdict.REJECTED and out.rule_ids == ["bad-parameter"]


def test_class_two_needs_one_person_with_a_listed_role() -> None:
    out = j("pump1", "stop")
    assert out.verdict is SafetyVerdict.NEEDS_HUMAN and out.hazard_class == 2
    assert out.approvers_required == 1
    assert "shift_supervisor" in out.approver_roles
    assert out.timeout_s == 300


def test_proposed_class_can_raise_but_never_lower_the_class() -> None:
    assert j("pump1", "set_speed", {"speed_pct": 80}, proposed=3).approvers_required == 2
    assert j("pump1", "stop", proposed=0).hazard_class == 2


def test_notify_is_advisory_and_approved() -> None:
    out = j("pump1", "notify")
    assert out.verdict is SafetyVerdict.APPROVED and out.hazard_class == 0


def test_device_limit_overrides_its_type() -> None:
    strict = Policies.load(ROOT / "scenarios" / "policies" / "min-flow.yaml")
    out = j("pump1", "set_speed", {"speed_pct": 80}, policies=strict)
    assert out.verdict is SafetyVerdict.REJECTED
    assert "below the minimum 90.0" in out.reasons[0]


def test_bad_policy_file_names_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "version: 1\ndevice_types:\n  valve:\n    commands:\n"
        "      set_position: {hazard_class: 7}\n"
    )
    with pytest.raises(ConfigError) as info:
        Policies.load(bad)
    assert info.value.line == 5
    assert info.value.field == "device_types.valve.commands.set_position.hazard_class"


@pytest.mark.parametrize(
    ("snippet", "line", "field"),
    [
        (
            "device_types:\n  valve:\n    limits:\n      position_pct: {min: 0, max: .nan}\n",
            5,
            "device_types.valve.limits.position_pct.max",
        ),
        (
            "interlocks:\n  - {id: i, description: d, command: set_position,\n"
            "     parameter: position_pct, below: .nan}\n",
            4,
            "interlocks.0.below",
        ),
        (
            "interlocks:\n  - id: i\n    description: d\n    command: set_position\n"
            "    while_state: {device: pump1, sensor: speed_pct, above: .inf}\n",
            6,
            "interlocks.0.while_state.above",
        ),
    ],
    ids=["limit", "interlock", "while_state"],
)
def test_a_threshold_that_is_not_finite_is_refused(
    tmp_path: Path, snippet: str, line: int, field: str
) -> None:
    """NaN fails every comparison, so a NaN limit or interlock bound would never hold."""
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\n" + snippet)
    with pytest.raises(ConfigError, match="finite") as info:
        Policies.load(bad)
    assert (info.value.line, info.value.field) == (line, field)


def test_device_command_rule_overrides_its_type() -> None:
    critical = Policies.load(ROOT / "scenarios" / "policies" / "cooling-critical.yaml")
    out = j("pump1", "stop", policies=critical)
    assert out.verdict is SafetyVerdict.NEEDS_HUMAN and out.hazard_class == 3
    assert out.approvers_required == 2


def test_maintenance_window_forbids_actuation_but_not_advice() -> None:
    from datetime import UTC

    tagged = Policies.load(ROOT / "scenarios" / "policies" / "maintenance.yaml")
    inside = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    after = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    out = j("inlet_valve", "set_position", {"position_pct": 100}, policies=tagged, now=inside)
    assert out.verdict is SafetyVerdict.REJECTED
    assert out.rule_ids == ["maintenance:pump1-overhaul"]
    assert "PTW-1042" in out.reasons[0]
    assert j("pump1", "notify", policies=tagged, now=inside).verdict is SafetyVerdict.APPROVED
    assert (
        j("inlet_valve", "set_position", {"position_pct": 100}, policies=tagged, now=after).verdict
        is SafetyVerdict.APPROVED
    )


def test_maintenance_window_needs_aware_ordered_times(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "version: 1\nmaintenance_windows:\n  - id: w\n    devices: [pump1]\n"
        "    start: 2026-01-01T02:00:00Z\n    end: 2026-01-01T01:00:00Z\n"
    )
    with pytest.raises(ConfigError, match="end must be after start") as info:
        Policies.load(bad)
    assert info.value.line == 3
