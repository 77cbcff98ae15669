"""Fault onset and the signatures each fault leaves on its pump's readings.

:func:`activation` gives a fault's strength at a plant time (0 before ``at``, a linear ramp to
``severity`` over ``ramp_s``, 0 again after ``duration_s``). :data:`SIGNATURES` is the contract
between the simulator and the diagnosis: at severity 1 every sensor in ``up``/``down`` moves
more than 5 noise standard deviations in that direction within about 20 s of onset, every
sensor in ``steady`` stays within noise, and the others may drift as consequences (a motor
that draws less current cools slowly). ``relief`` names the corrective action.

Fault magnitudes at severity 1 (rated operation, default plant):

- cavitation: head falls 36 %, so flow -20 %, pressure -36 %, current -11 %; vibration_1/2
  x4 with erratic extra noise; gone while the speed is at or below 85 %. Vibration grows
  with the square of the strength, so while it ramps in the flow and pressure loss lead
  (as in SKAB, where flow collapses first), and at full strength vibration dominates.
- inlet/outlet_valve_closure: the valve is driven to 15 % open (100 - 85 x strength); a
  ``set_position`` on that valve after onset gives control back to its setpoint.
- rotor_imbalance: the n²-dependent part of vibration_1/2 x4; nothing else.
- bearing_overheating: +30 °C on motor_temperature with a 120 s time constant (about
  +0.25 °C/s at onset), vibration_2 +15 %, current +8 % of rated; its heat source stops when
  the pump stops or runs at or below 50 % speed, and the excess decays.
- sensor_stuck: the sensor repeats its last value before ``at`` exactly.
- sensor_drift: the sensor gains ``severity`` x one noise sd every 2 s, upwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantcrew.plant.spec import FaultSpec, FaultType

CAVITATION_HEAD_LOSS = 0.36
CAVITATION_VIBRATION_GAIN = 3.0
CAVITATION_RELIEF_SPEED_PCT = 85.0
VALVE_CLOSURE_DEPTH_PCT = 85.0
IMBALANCE_GAIN = 3.0
BEARING_EXCESS_C = 30.0
BEARING_TAU_S = 120.0
BEARING_VIBRATION_2_GAIN = 0.15
BEARING_CURRENT_GAIN = 0.08
BEARING_RELIEF_SPEED_PCT = 50.0
DRIFT_SECONDS_PER_SD = 2.0


def activation(fault: FaultSpec, t: float) -> float:
    """The fault's strength at plant time ``t``: 0 .. ``severity``.

    Linear ramp from ``at`` over ``ramp_s`` (a step when ``ramp_s`` is 0), held, and back to 0
    from ``at + duration_s`` when a duration is set.
    """
    if t < fault.at:
        return 0.0
    if fault.duration_s is not None and t >= fault.at + fault.duration_s:
        return 0.0
    if fault.ramp_s <= 0:
        return fault.severity
    return fault.severity * min(1.0, (t - fault.at) / fault.ramp_s)


@dataclass(frozen=True)
class Signature:
    """How a fault shows on its pump's sensors; see the module docstring for the contract."""

    up: frozenset[str]
    down: frozenset[str]
    steady: frozenset[str]
    relief: str


_PROCESS = frozenset(
    {
        "flow_rate",
        "pressure",
        "vibration_1",
        "vibration_2",
        "current",
        "voltage",
        "motor_temperature",
        "fluid_temperature",
        "speed_pct",
    }
)


def _sig(up: set[str], down: set[str], free: set[str], relief: str) -> Signature:
    steady = _PROCESS - up - down - free
    return Signature(frozenset(up), frozenset(down), frozenset(steady), relief)


SIGNATURES: dict[FaultType, Signature] = {
    FaultType.CAVITATION: _sig(
        {"vibration_1", "vibration_2"},
        {"flow_rate", "pressure", "current"},
        {"motor_temperature", "fluid_temperature"},
        "reduce speed to <= 85 % (set_speed) or stop the pump",
    ),
    FaultType.INLET_VALVE_CLOSURE: _sig(
        set(),
        {"flow_rate", "pressure", "current", "motor_temperature"},
        {"fluid_temperature"},
        "set_position 100 on the pump's inlet valve",
    ),
    FaultType.OUTLET_VALVE_CLOSURE: _sig(
        {"pressure"},
        {"flow_rate", "current"},
        {"motor_temperature", "fluid_temperature"},
        "set_position 100 on the pump's outlet valve",
    ),
    FaultType.ROTOR_IMBALANCE: _sig(
        {"vibration_1", "vibration_2"},
        set(),
        set(),
        "reduce speed (vibration ~ n²) or stop the pump; opening valves does not help",
    ),
    FaultType.BEARING_OVERHEATING: _sig(
        {"motor_temperature", "vibration_2", "current"},
        set(),
        set(),
        "stop the pump or reduce speed to <= 50 %",
    ),
    FaultType.SENSOR_STUCK: _sig(
        set(), set(), set(), "none on the process: repair or replace the sensor"
    ),
    FaultType.SENSOR_DRIFT: _sig(
        set(), set(), set(), "none on the process: recalibrate the sensor"
    ),
}
"""Fault type -> its signature on the pump it strikes (sensor faults: only the named sensor
moves, stuck (flat, no noise) or drifting up)."""


__all__ = ["SIGNATURES", "Signature", "activation"]
