"""What a simulated plant is made of, and the faults a scenario injects into it.

These pydantic models are the ``plant:`` and ``faults:`` parts of a scenario YAML file. Every
model forbids unknown keys. Cross-references (a pump's valves, tank and heat exchanger) are
checked when a :class:`PlantSpec` is built; a broken one fails validation with a message that
starts with the dotted path of the offending field, e.g. ``devices.0.inlet_valve: ...``.
Faults are checked against a plant by :func:`check_faults`, which raises
:class:`~plantcrew.errors.ConfigError` naming ``faults.<i>.<field>``.

Sensor vocabulary (:data:`SENSORS`): the names and units are the ones the SKAB CSV preset maps
to (SKAB: github.com/waico/SKAB, a water-circulation testbed with a centrifugal pump), so one
detector and one diagnosis work on both the simulator and the recorded data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plantcrew.errors import ConfigError

_ID = r"^[A-Za-z0-9_\-]+$"  # a device id is one bus subject token (telemetry.<device_id>)


@dataclass(frozen=True)
class SensorInfo:
    """One sensor a device type reports: ``name``, ``unit``, ``noise_sd`` (in ``unit``)."""

    name: str
    unit: str
    noise_sd: float
    description: str


PUMP_SENSORS: tuple[SensorInfo, ...] = (
    SensorInfo("flow_rate", "L/min", 0.5, "volume flow (SKAB Volume Flow RateRMS)"),
    SensorInfo("pressure", "bar", 0.01, "discharge pressure, gauge (SKAB Pressure)"),
    SensorInfo("vibration_1", "g", 0.003, "accelerometer 1 RMS (SKAB Accelerometer1RMS)"),
    SensorInfo("vibration_2", "g", 0.003, "accelerometer 2 RMS (SKAB Accelerometer2RMS)"),
    SensorInfo("current", "A", 0.02, "motor current (SKAB Current)"),
    SensorInfo("voltage", "V", 2.0, "motor supply voltage (SKAB Voltage)"),
    SensorInfo("motor_temperature", "°C", 0.1, "motor winding temperature (SKAB Temperature)"),
    SensorInfo("fluid_temperature", "°C", 0.05, "pumped fluid temperature (SKAB Thermocouple)"),
    SensorInfo("speed_pct", "%", 0.05, "actual speed, percent of rated (drive feedback)"),
)
VALVE_SENSORS: tuple[SensorInfo, ...] = (
    SensorInfo("position_pct", "%", 0.1, "valve opening, 0 closed .. 100 fully open"),
)
TANK_SENSORS: tuple[SensorInfo, ...] = (
    SensorInfo("level_pct", "%", 0.2, "tank level, percent of height"),
)
HEAT_EXCHANGER_SENSORS: tuple[SensorInfo, ...] = (
    SensorInfo("inlet_temperature", "°C", 0.05, "fluid temperature entering the exchanger"),
    SensorInfo("outlet_temperature", "°C", 0.05, "fluid temperature leaving the exchanger"),
)
SENSORS: dict[str, tuple[SensorInfo, ...]] = {
    "centrifugal_pump": PUMP_SENSORS,
    "valve": VALVE_SENSORS,
    "tank": TANK_SENSORS,
    "heat_exchanger": HEAT_EXCHANGER_SENSORS,
}
"""Device type -> the sensors it reports, in the order of its readings."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MotorSpec(_Spec):
    """The pump's induction motor, at rated speed and flow."""

    rated_current_a: float = Field(2.5, gt=0, description="motor current at rated operation, A")
    voltage_v: float = Field(230.0, gt=0, description="supply voltage, V")
    temperature_c: float = Field(
        75.0, description="steady winding temperature at rated operation, °C"
    )
    thermal_tau_s: float = Field(150.0, gt=0, description="winding thermal time constant, s")


class PumpSpec(_Spec):
    """A centrifugal pump on a variable-speed drive, piped between two valves.

    Rated values hold at 100 % speed with both valves fully open; the affinity laws scale them
    with speed (flow ~ n, pressure ~ n², shaft power ~ n³).
    """

    type: Literal["centrifugal_pump"] = "centrifugal_pump"
    id: str = Field(pattern=_ID, description="device id (one bus subject token)")
    rated_flow_lpm: float = Field(125.0, gt=0, description="flow at rated point, L/min")
    rated_pressure_bar: float = Field(1.0, gt=0, description="discharge pressure at rated, bar")
    speed_pct: float = Field(100.0, ge=0, le=110, description="initial speed setpoint, %")
    running: bool = Field(True, description="whether the motor runs at plant time 0")
    speed_ramp_s: float = Field(
        5.0, ge=0, description="drive ramp time from 0 to 100 % speed, s (0: instantaneous)"
    )
    inlet_valve: str = Field(description="id of the valve on the pump's suction side")
    outlet_valve: str = Field(description="id of the valve on the pump's discharge side")
    tank: str | None = Field(None, description="id of the tank the pump draws from, if any")
    vibration_1_g: float = Field(0.20, gt=0, description="vibration_1 RMS at rated speed, g")
    vibration_2_g: float = Field(0.28, gt=0, description="vibration_2 RMS at rated speed, g")
    fluid_temperature_c: float = Field(
        30.0, description="steady fluid temperature at rated operation, °C"
    )
    motor: MotorSpec = Field(default_factory=MotorSpec, description="motor parameters")


class ValveSpec(_Spec):
    """A motorised valve; ``role`` says on which side of its pump it sits."""

    type: Literal["valve"] = "valve"
    id: str = Field(pattern=_ID, description="device id (one bus subject token)")
    role: Literal["inlet", "outlet"] = Field(description="suction (inlet) or discharge (outlet)")
    position_pct: float = Field(100.0, ge=0, le=100, description="initial opening, %")
    stroke_time_s: float = Field(
        4.0, ge=0, description="time for a full 0..100 % stroke, s (0: instantaneous)"
    )


class TankSpec(_Spec):
    """A supply tank (closed circuit: its level holds steady)."""

    type: Literal["tank"] = "tank"
    id: str = Field(pattern=_ID, description="device id (one bus subject token)")
    level_pct: float = Field(80.0, ge=0, le=100, description="level, percent of height")


class HeatExchangerSpec(_Spec):
    """A cooler on a pump's discharge line."""

    type: Literal["heat_exchanger"] = "heat_exchanger"
    id: str = Field(pattern=_ID, description="device id (one bus subject token)")
    pump: str | None = Field(
        None, description="id of the pump whose fluid it cools; None: the plant's only pump"
    )
    cooling_c: float = Field(3.0, ge=0, description="temperature drop at rated flow, °C")


DeviceSpec = Annotated[
    PumpSpec | ValveSpec | TankSpec | HeatExchangerSpec, Field(discriminator="type")
]


class PlantSpec(_Spec):
    """The devices of a simulated plant, with their cross-references checked."""

    devices: list[DeviceSpec] = Field(min_length=1, description="the plant's devices")
    ambient_temperature_c: float = Field(
        25.0, description="ambient temperature, °C (a stopped pump cools towards it)"
    )

    @field_validator("devices")
    @classmethod
    def _cross_references(cls, devices: list[DeviceSpec]) -> list[DeviceSpec]:
        by_id: dict[str, DeviceSpec] = {}
        for i, dev in enumerate(devices):
            if dev.id in by_id:
                raise ValueError(f"devices.{i}.id: device id {dev.id!r} is used twice")
            by_id[dev.id] = dev
        pumps = [d for d in devices if isinstance(d, PumpSpec)]
        piped: dict[str, str] = {}
        for i, dev in enumerate(devices):
            if isinstance(dev, PumpSpec):
                for field, role in (("inlet_valve", "inlet"), ("outlet_valve", "outlet")):
                    ref = getattr(dev, field)
                    target = by_id.get(ref)
                    where = f"devices.{i}.{field}"
                    if not isinstance(target, ValveSpec):
                        raise ValueError(f"{where}: {ref!r} is not a valve of this plant")
                    if target.role != role:
                        raise ValueError(f"{where}: valve {ref!r} has role {target.role!r}")
                    if ref in piped:
                        raise ValueError(
                            f"{where}: valve {ref!r} is already piped to pump {piped[ref]!r}"
                        )
                    piped[ref] = dev.id
                if dev.tank is not None and not isinstance(by_id.get(dev.tank), TankSpec):
                    raise ValueError(f"devices.{i}.tank: {dev.tank!r} is not a tank of this plant")
            elif isinstance(dev, HeatExchangerSpec):
                if dev.pump is None and len(pumps) != 1:
                    raise ValueError(
                        f"devices.{i}.pump: required when the plant has {len(pumps)} pumps"
                    )
                if dev.pump is not None and not isinstance(by_id.get(dev.pump), PumpSpec):
                    raise ValueError(f"devices.{i}.pump: {dev.pump!r} is not a pump of this plant")
        return devices

    @model_validator(mode="after")
    def _temperatures(self) -> PlantSpec:
        for i, dev in enumerate(self.devices):
            if isinstance(dev, PumpSpec):
                if dev.motor.temperature_c <= self.ambient_temperature_c:
                    raise ValueError(
                        f"devices.{i}.motor.temperature_c: must exceed "
                        f"ambient_temperature_c {self.ambient_temperature_c}"
                    )
                if dev.fluid_temperature_c < self.ambient_temperature_c:
                    raise ValueError(
                        f"devices.{i}.fluid_temperature_c: must not be below "
                        f"ambient_temperature_c {self.ambient_temperature_c}"
                    )
        return self

    def device(self, device_id: str) -> DeviceSpec:
        """The device named ``device_id``; raises KeyError when there is none."""
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)

    def pump_of(self, hx: HeatExchangerSpec) -> PumpSpec:
        """The pump a heat exchanger sits on (its ``pump``, or the plant's only pump)."""
        pumps = [d for d in self.devices if isinstance(d, PumpSpec)]
        if hx.pump is None:
            return pumps[0]
        return next(p for p in pumps if p.id == hx.pump)


class FaultType(StrEnum):
    """The faults the simulator can inject (see ``plantcrew.plant.faults`` for signatures)."""

    CAVITATION = "cavitation"
    INLET_VALVE_CLOSURE = "inlet_valve_closure"
    OUTLET_VALVE_CLOSURE = "outlet_valve_closure"
    ROTOR_IMBALANCE = "rotor_imbalance"
    BEARING_OVERHEATING = "bearing_overheating"
    SENSOR_STUCK = "sensor_stuck"
    SENSOR_DRIFT = "sensor_drift"


SENSOR_FAULTS = frozenset({FaultType.SENSOR_STUCK, FaultType.SENSOR_DRIFT})
VALVE_FAULTS = frozenset({FaultType.INLET_VALVE_CLOSURE, FaultType.OUTLET_VALVE_CLOSURE})
PUMP_FAULTS = frozenset(
    {FaultType.CAVITATION, FaultType.ROTOR_IMBALANCE, FaultType.BEARING_OVERHEATING}
)


class FaultSpec(_Spec):
    """One fault injected at plant time ``at``, ramping in over ``ramp_s`` to ``severity``.

    ``device`` is the pump for process faults. For the valve closures it may name the pump
    (its inlet or outlet valve is meant) or the valve itself. For sensor faults it is any
    device, and ``sensor`` one of that device's sensors. With ``duration_s`` the fault ends
    that many seconds after ``at``; without, it lasts until relieved (or for ever).
    """

    type: FaultType = Field(description="which fault")
    device: str = Field(pattern=_ID, description="device id the fault strikes")
    at: float = Field(ge=0, allow_inf_nan=False, description="onset, plant seconds")
    severity: float = Field(1.0, ge=0, le=1, description="0 (none) .. 1 (full) strength")
    ramp_s: float = Field(5.0, ge=0, allow_inf_nan=False, description="onset duration, s")
    sensor: str | None = Field(None, description="sensor name; required for sensor faults")
    duration_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="seconds after `at` the fault ends"
    )

    @model_validator(mode="after")
    def _sensor_field(self) -> FaultSpec:
        if self.type in SENSOR_FAULTS and self.sensor is None:
            raise ValueError(f"sensor: required for a {self.type.value} fault")
        if self.type not in SENSOR_FAULTS and self.sensor is not None:
            raise ValueError(f"sensor: only sensor faults name a sensor, not {self.type.value}")
        return self


def check_faults(plant: PlantSpec, faults: Sequence[FaultSpec], *, path: str = "faults") -> None:
    """Check that each fault strikes a device (and sensor) that can have it.

    Raises :class:`ConfigError` whose ``field`` is ``<path>.<index>.device`` or ``.sensor``.
    """
    for i, fault in enumerate(faults):
        where = f"{path}.{i}"
        try:
            dev = plant.device(fault.device)
        except KeyError:
            raise ConfigError(
                f"no device {fault.device!r} in the plant", field=f"{where}.device"
            ) from None
        if fault.type in SENSOR_FAULTS:
            names = [s.name for s in SENSORS[dev.type]]
            if fault.sensor not in names:
                raise ConfigError(
                    f"{dev.type} {dev.id!r} has no sensor {fault.sensor!r} (it has {names})",
                    field=f"{where}.sensor",
                )
        elif fault.type in PUMP_FAULTS and not isinstance(dev, PumpSpec):
            raise ConfigError(
                f"{fault.type.value} needs a centrifugal_pump, {dev.id!r} is a {dev.type}",
                field=f"{where}.device",
            )
        elif fault.type in VALVE_FAULTS:
            role = "inlet" if fault.type is FaultType.INLET_VALVE_CLOSURE else "outlet"
            if isinstance(dev, ValveSpec):
                if dev.role != role or not _pump_of_valve(plant, dev.id):
                    raise ConfigError(
                        f"{fault.type.value} needs an {role} valve piped to a "
                        f"pump; {dev.id!r} is not",
                        field=f"{where}.device",
                    )
            elif not isinstance(dev, PumpSpec):
                raise ConfigError(
                    f"{fault.type.value} strikes a pump or its {role} valve, "
                    f"{dev.id!r} is a {dev.type}",
                    field=f"{where}.device",
                )


def _pump_of_valve(plant: PlantSpec, valve_id: str) -> PumpSpec | None:
    for dev in plant.devices:
        if isinstance(dev, PumpSpec) and valve_id in (dev.inlet_valve, dev.outlet_valve):
            return dev
    return None


def fault_targets(plant: PlantSpec, fault: FaultSpec) -> tuple[str | None, str | None]:
    """``(pump_id, valve_id)`` a (checked) fault acts on; either may be None."""
    dev = plant.device(fault.device)
    if fault.type in VALVE_FAULTS:
        if isinstance(dev, PumpSpec):
            valve = (
                dev.inlet_valve
                if fault.type is FaultType.INLET_VALVE_CLOSURE
                else (dev.outlet_valve)
            )
            return dev.id, valve
        pump = _pump_of_valve(plant, dev.id)
        return (pump.id if pump else None), dev.id
    if isinstance(dev, PumpSpec):
        return dev.id, None
    return None, None


def default_plant() -> PlantSpec:
    """The standard plant: ``pump1`` between ``inlet_valve`` and ``outlet_valve``, fed by
    ``tank1``; rated 125 L/min at 1.0 bar, 2.5 A, 230 V (close to SKAB's testbed)."""
    return PlantSpec(
        devices=[
            PumpSpec(
                id="pump1", inlet_valve="inlet_valve", outlet_valve="outlet_valve", tank="tank1"
            ),
            ValveSpec(id="inlet_valve", role="inlet"),
            ValveSpec(id="outlet_valve", role="outlet"),
            TankSpec(id="tank1"),
        ]
    )


__all__ = [
    "PUMP_FAULTS",
    "SENSORS",
    "SENSOR_FAULTS",
    "VALVE_FAULTS",
    "DeviceSpec",
    "FaultSpec",
    "FaultType",
    "HeatExchangerSpec",
    "MotorSpec",
    "PlantSpec",
    "PumpSpec",
    "SensorInfo",
    "TankSpec",
    "ValveSpec",
    "check_faults",
    "default_plant",
    "fault_targets",
]
