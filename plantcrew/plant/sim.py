"""The simulated plant: a stepped, seeded model of pumps, valves, tanks and heat exchangers.

``SimulatedPlant(spec, faults, seed, dt)`` advances by ``dt`` plant seconds per :meth:`step`
and returns one :class:`~plantcrew.messages.TelemetryBatch` per device whose readings carry
``ts`` = plant seconds. It never sleeps: an hour of plant time is 3600 steps of arithmetic.

Determinism: the same spec, faults, seed and commands applied at the same plant times give
identical readings. Every step draws the same count of random numbers in the same order,
whatever the plant's state, so a command changes the process but never the noise stream.
:meth:`SimulatedPlant.replay_to` rebuilds a plant's exact state from its recorded commands
(``SimulatedPlant.commands``), e.g. after a crash.

Model (one pump, per its spec; n = speed / 100):

- Hydraulics: pump head ``H = H0 n² (1 - cavitation loss) - k_p Q²`` with shut-off head
  ``H0 = 1.5 x rated pressure``, against the suction loss ``k_in / f_in²`` (0.15 of rated
  pressure at rated flow) and the discharge line ``k_out (0.6 + 0.4 / f_out²)``, where f is a
  valve's opening (linear characteristic, 0.2 % leakage when shut). Solving gives
  ``Q = n sqrt(H0' / k_total)`` (flow ~ n) and discharge ``pressure = k_out Q²`` (~ n²): a
  closing inlet valve lowers flow and pressure, a closing outlet valve lowers flow and raises
  pressure. Reference: the pump affinity laws and the pump/system-curve intersection of
  any centrifugal pump handbook (e.g. Gülich, Centrifugal Pumps, 3rd ed., ch. 3 and 11).
- Motor current: ``I = I_rated n³ (0.45 + 0.55 q)`` with q = Q / (n Q_rated): it follows
  shaft power, ~ n³ by the affinity laws, and falls with flow to 45 % at shut-off (typical
  radial impeller). 0 A when the speed is 0.
- Vibration: the rated RMS scaled by n² (imbalance forces ~ n²), never below a 0.002 g
  floor (accelerometer noise; reached below about 10 % speed).
- Temperatures: first-order lags towards ambient + rise, with the motor's thermal time
  constant for the winding and 1800 s for the fluid. Winding rise = rated rise x
  (0.6 + 0.4 (I / I_rated)² / n) while running: iron and friction losses (60 % at rated)
  grow with speed about as fast as the shaft fan's cooling, so their rise barely depends on
  speed; copper losses ~ I² are cooled ~ n. The weak current coupling matches SKAB, whose
  motor runs 12 °C cooler at 40 % of the current. Fluid rise ~ shaft power. Small slow cycles
  (motor ±0.3 °C per 45 min, fluid ±0.1 °C per hour) with seeded phases. A stopped pump
  relaxes to ambient.
- Drives and valves move towards their setpoints at a fixed rate (``speed_ramp_s``,
  ``stroke_time_s`` for a full 0..100 % change; 0 means instantaneous).
- Readings: model value + seeded gaussian noise of the sensor's ``noise_sd`` (see
  ``spec.SENSORS``), clamped at 0 for magnitudes and to 0..100 for percentages.

Faults are described, with their magnitudes, in ``plantcrew.plant.faults``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from plantcrew.errors import PlantcrewError
from plantcrew.messages import Reading, TelemetryBatch
from plantcrew.plant import faults as fx
from plantcrew.plant.actuators import ActuatorError
from plantcrew.plant.clock import DEFAULT_START, SimClock
from plantcrew.plant.spec import (
    SENSORS,
    FaultSpec,
    FaultType,
    HeatExchangerSpec,
    PlantSpec,
    PumpSpec,
    TankSpec,
    ValveSpec,
    check_faults,
    fault_targets,
)

SHUTOFF_HEAD_RATIO = 1.5
INLET_LOSS = 0.15
PUMP_LOSS = SHUTOFF_HEAD_RATIO - 1.0 - INLET_LOSS
OUTLET_LINE, OUTLET_VALVE = 0.6, 0.4
VALVE_LEAK = 0.002
VIBRATION_FLOOR_G = 0.002
FLUID_TAU_S = 1800.0
IRON_LOSS = 0.6  # share of the motor's rated losses that is not copper (I²) loss
MOTOR_CYCLE = (0.3, 2700.0)  # amplitude °C, period s
FLUID_CYCLE = (0.1, 3600.0)
# extra noise while cavitating: flow sd (L/min at 125 L/min rated), pressure sd (bar per bar
# rated), vibration sd (fraction of the vibration)
CAVITATION_NOISE = (3.0, 0.03, 0.1)
_EXTRA_DRAWS = 4  # per pump per step: cavitation noise on flow, pressure, vibration_1/2
_UNITS = {kind: {s.name: s.unit for s in sensors} for kind, sensors in SENSORS.items()}
_NOISE = {kind: {s.name: s.noise_sd for s in sensors} for kind, sensors in SENSORS.items()}
_PERCENT = {"speed_pct", "position_pct", "level_pct"}
_UNBOUNDED = {"motor_temperature", "fluid_temperature", "inlet_temperature", "outlet_temperature"}


class PlantError(PlantcrewError):
    """The simulated plant cannot do what was asked: an unknown device, a bad ``dt``, or a
    replay whose commands lie off the step grid, out of order or behind the plant's time."""


class AppliedCommand(NamedTuple):
    """A command the plant applied: at plant seconds ``t``, before the step that followed."""

    t: float
    device_id: str
    command: str
    parameters: dict[str, Any]


@dataclass
class _Pump:
    spec: PumpSpec
    running: bool
    setpoint: float
    speed: float
    winding_c: float = 0.0
    fluid_c: float = 0.0
    bearing_c: float = 0.0
    phases: tuple[float, float] = (0.0, 0.0)
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class _Valve:
    spec: ValveSpec
    setpoint: float
    position: float
    effective: float


@dataclass
class _Fault:
    spec: FaultSpec
    pump_id: str | None
    valve_id: str | None
    relieved_at: float | None = None
    stuck_value: float | None = None


def _toward(value: float, target: float, full_scale_s: float, dt: float) -> float:
    if full_scale_s <= 0:
        return target
    step = 100.0 / full_scale_s * dt
    return min(target, value + step) if target > value else max(target, value - step)


def _opening(position_pct: float) -> float:
    return max(position_pct / 100.0, VALVE_LEAK)


class _Hydraulics(NamedTuple):
    flow: float
    pressure: float
    current: float
    shaft: float  # shaft power, fraction of rated


def _hydraulics(
    p: PumpSpec, n: float, inlet_pct: float, outlet_pct: float, cavitation: float, bearing: float
) -> _Hydraulics:
    if n <= 0:
        return _Hydraulics(0.0, 0.0, 0.0, 0.0)
    b = p.rated_pressure_bar / p.rated_flow_lpm**2
    k_in = b * INLET_LOSS / _opening(inlet_pct) ** 2
    k_out = b * (OUTLET_LINE + OUTLET_VALVE / _opening(outlet_pct) ** 2)
    head0 = SHUTOFF_HEAD_RATIO * p.rated_pressure_bar * (1 - fx.CAVITATION_HEAD_LOSS * cavitation)
    flow = n * math.sqrt(head0 / (k_in + b * PUMP_LOSS + k_out))
    q = flow / (n * p.rated_flow_lpm)
    shaft = n**3 * (0.45 + 0.55 * q)
    current = p.motor.rated_current_a * (shaft + fx.BEARING_CURRENT_GAIN * bearing)
    return _Hydraulics(flow, k_out * flow**2, current, shaft)


class SimulatedPlant:
    """A seeded, stepped plant built from a :class:`PlantSpec` and a list of faults.

    ``dt`` is the step in plant seconds (> 0); ``start`` the UTC instant of plant time 0
    (``clock.now()`` follows the plant). Raises ConfigError for a fault that does not fit the
    plant (``faults.<i>.device`` / ``.sensor``) and PlantError for a bad ``dt``.
    """

    def __init__(
        self,
        spec: PlantSpec,
        faults: Sequence[FaultSpec] = (),
        seed: int = 0,
        dt: float = 1.0,
        *,
        start: datetime = DEFAULT_START,
    ) -> None:
        if not math.isfinite(dt) or dt <= 0:
            raise PlantError(f"dt must be a finite number of seconds > 0, got {dt!r}")
        check_faults(spec, faults)
        self.spec, self.seed, self.dt = spec, seed, dt
        self.faults: tuple[FaultSpec, ...] = tuple(faults)
        self.clock = SimClock(start)
        self._rng = random.Random(seed)
        self._step = 0
        self._commands: list[AppliedCommand] = []
        self._last: dict[tuple[str, str], float] = {}
        self._pumps: dict[str, _Pump] = {}
        self._valves: dict[str, _Valve] = {}
        for dev in spec.devices:
            if isinstance(dev, PumpSpec):
                phases = (self._rng.uniform(0, 2 * math.pi), self._rng.uniform(0, 2 * math.pi))
                speed = dev.speed_pct if dev.running else 0.0
                self._pumps[dev.id] = _Pump(dev, dev.running, dev.speed_pct, speed, phases=phases)
            elif isinstance(dev, ValveSpec):
                pos = dev.position_pct
                self._valves[dev.id] = _Valve(dev, pos, pos, pos)
        self._faults = [_Fault(f, *fault_targets(spec, f)) for f in self.faults]
        for pump in self._pumps.values():  # start in thermal steady state
            h = self._pump_hydraulics(pump, 0.0, 0.0)
            pump.winding_c, pump.fluid_c = self._thermal_targets(pump, h)
            self._pump_values(pump, h, 0.0, 0.0, 0.0)

    # ---- time --------------------------------------------------------------------------

    @property
    def t(self) -> float:
        """Plant seconds since start (a multiple of ``dt``)."""
        return self._step * self.dt

    @property
    def commands(self) -> list[AppliedCommand]:
        """Every command applied so far, in order (what :meth:`replay_to` takes)."""
        return list(self._commands)

    @property
    def device_ids(self) -> list[str]:
        """The plant's device ids, in spec order (the order of :meth:`step`'s batches)."""
        return [d.id for d in self.spec.devices]

    def step(self) -> list[TelemetryBatch]:
        """Advance by ``dt`` and return one batch per device (spec order), ``ts`` = new ``t``."""
        values = self._advance()
        ts = self.t
        batches = []
        for dev in self.spec.devices:
            units = _UNITS[dev.type]
            readings = [
                Reading(device_id=dev.id, sensor=name, value=value, unit=units[name], ts=ts)
                for name, value in values[dev.id].items()
            ]
            batches.append(TelemetryBatch(device_id=dev.id, readings=readings))
        return batches

    def run(self, seconds: float) -> list[TelemetryBatch]:
        """Step for ``seconds`` of plant time (rounded to whole steps); all batches in order."""
        out: list[TelemetryBatch] = []
        for _ in range(round(seconds / self.dt)):
            out.extend(self.step())
        return out

    def replay_to(self, t: float, commands: Iterable[Sequence[Any]] = ()) -> SimulatedPlant:
        """Advance to plant time ``t``, applying each recorded command at its time.

        ``commands`` are ``(t_i, device_id, command, parameters)`` records in time order, as
        :attr:`commands` lists them (JSON lists work too); each is applied when the plant
        reaches ``t_i``, before the next step, as it was when recorded. A fresh plant with the
        same spec, faults, seed and ``dt`` so reaches exactly the recorded state. Returns
        ``self``. Raises PlantError for a time off the ``dt`` grid, behind the plant, after
        ``t`` or out of order, and ActuatorError for a command the plant rejects.
        """
        for i, rec in enumerate(commands):
            try:
                t_i, device_id, command, parameters = rec
                t_i = float(t_i)
            except (TypeError, ValueError):
                raise PlantError(
                    f"commands[{i}]: expected (t, device_id, command, parameters), got {rec!r}"
                ) from None
            if t_i > t + 1e-9:
                raise PlantError(f"commands[{i}]: at t={t_i}, after the replay target t={t}")
            self._run_to(t_i, f"commands[{i}]")
            self.apply(str(device_id), str(command), dict(parameters or {}))
        self._run_to(t, "t")
        return self

    def _run_to(self, t: float, what: str) -> None:
        n = round(t / self.dt)
        if not math.isfinite(t) or abs(n * self.dt - t) > 1e-6 * max(1.0, self.dt):
            raise PlantError(f"{what}: t={t} is not on the plant's step grid (dt={self.dt})")
        if n < self._step:
            raise PlantError(f"{what}: t={t} lies before the plant's time t={self.t}")
        while self._step < n:
            self._advance()

    # ---- commands ------------------------------------------------------------------------

    def apply(self, device_id: str, command: str, parameters: dict[str, Any]) -> str:
        """Apply an actuator command now (plant time ``t``); returns what changed, in words.

        Pump: ``set_speed {speed_pct: 0..110}`` (a stopped pump keeps it as its setpoint),
        ``stop {}``, ``start {}``. Valve: ``set_position {position_pct: 0..100}``, which also
        takes control back from an uncommanded closure (fault). Raises ActuatorError naming
        the unknown device, unknown command, or missing/extra/out-of-range parameter.
        """
        if not isinstance(parameters, dict):
            raise ActuatorError(
                f"{command} on {device_id!r}: parameters must be a mapping, "
                f"got {type(parameters).__name__}"
            )
        if device_id in self._pumps:
            detail = self._apply_pump(self._pumps[device_id], command, parameters)
        elif device_id in self._valves:
            detail = self._apply_valve(self._valves[device_id], command, parameters)
        elif device_id in self.device_ids:
            kind = self.spec.device(device_id).type
            raise ActuatorError(
                f"device {device_id!r} ({kind}) accepts no commands, got {command!r}"
            )
        else:
            raise ActuatorError(f"unknown device {device_id!r} (devices: {self.device_ids})")
        self._commands.append(AppliedCommand(self.t, device_id, command, dict(parameters)))
        return detail

    def _apply_pump(self, pump: _Pump, command: str, params: dict[str, Any]) -> str:
        pid = pump.spec.id
        if command == "set_speed":
            speed = _number(pid, command, params, "speed_pct", 0.0, 110.0)
            old, pump.setpoint = pump.setpoint, speed
            note = "" if pump.running else " (pump stopped: send start to run)"
            return f"{pid} speed setpoint {old:g} -> {speed:g} %{note}"
        if command in ("stop", "start"):
            _number(pid, command, params, None, 0, 0)
            was, pump.running = pump.running, command == "start"
            state = "running" if pump.running else "stopped"
            return f"{pid} {state}" + ("" if was != pump.running else " (already)")
        raise ActuatorError(
            f"unknown command {command!r} for pump {pid!r} (commands: set_speed, stop, start)"
        )

    def _apply_valve(self, valve: _Valve, command: str, params: dict[str, Any]) -> str:
        vid = valve.spec.id
        if command != "set_position":
            raise ActuatorError(
                f"unknown command {command!r} for valve {vid!r} (commands: set_position)"
            )
        pos = _number(vid, command, params, "position_pct", 0.0, 100.0)
        for f in self._faults:
            if f.valve_id == vid and f.relieved_at is None and f.spec.at <= self.t:
                f.relieved_at = self.t
                valve.position = valve.effective
        old, valve.setpoint = valve.setpoint, pos
        return f"{vid} position setpoint {old:g} -> {pos:g} %"

    # ---- state ---------------------------------------------------------------------------

    def state(self, device_id: str) -> dict[str, float]:
        """The device's true (noise-free) values and setpoints now.

        Pump: the process values of its sensors plus ``speed_setpoint_pct`` and ``running``
        (1.0/0.0); valve: ``position_pct`` (effective), ``setpoint_pct``; tank:
        ``level_pct``. Raises PlantError for an unknown device.
        """
        if device_id in self._pumps:
            pump = self._pumps[device_id]
            return {
                **pump.values,
                "speed_setpoint_pct": pump.setpoint,
                "running": 1.0 if pump.running else 0.0,
            }
        if device_id in self._valves:
            v = self._valves[device_id]
            return {"position_pct": v.effective, "setpoint_pct": v.setpoint}
        try:
            dev = self.spec.device(device_id)
        except KeyError:
            raise PlantError(f"unknown device {device_id!r} (devices: {self.device_ids})") from None
        if isinstance(dev, TankSpec):
            return {"level_pct": dev.level_pct}
        assert isinstance(dev, HeatExchangerSpec)
        return self._hx_values(dev)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: ``t``, ``step``, ``dt``, ``seed``, ``devices`` (each
        :meth:`state`), ``faults`` (strength now, relief time) and ``commands``."""
        return {
            "t": self.t,
            "step": self._step,
            "dt": self.dt,
            "seed": self.seed,
            "time": self.clock.now().isoformat(),
            "devices": {d: self.state(d) for d in self.device_ids},
            "faults": [
                {
                    "type": f.spec.type.value,
                    "device": f.spec.device,
                    "sensor": f.spec.sensor,
                    "strength": fx.activation(f.spec, self.t),
                    "relieved_at": f.relieved_at,
                }
                for f in self._faults
            ],
            "commands": [list(c) for c in self._commands],
        }

    # ---- the model -----------------------------------------------------------------------

    def _strength(self, pump_id: str, kind: FaultType, t: float) -> float:
        return max(
            (
                fx.activation(f.spec, t)
                for f in self._faults
                if f.pump_id == pump_id and f.spec.type is kind
            ),
            default=0.0,
        )

    def _pump_hydraulics(self, pump: _Pump, cavitation: float, bearing: float) -> _Hydraulics:
        return _hydraulics(
            pump.spec,
            pump.speed / 100.0,
            self._valves[pump.spec.inlet_valve].effective,
            self._valves[pump.spec.outlet_valve].effective,
            cavitation,
            bearing,
        )

    def _thermal_targets(self, pump: _Pump, h: _Hydraulics) -> tuple[float, float]:
        amb = self.spec.ambient_temperature_c
        p = pump.spec
        n = pump.speed / 100.0
        losses = 0.0
        if n > 0:
            copper = (h.current / p.motor.rated_current_a) ** 2 / max(n, 0.2)
            losses = IRON_LOSS * min(1.0, n / 0.2) + (1 - IRON_LOSS) * copper
        winding = amb + (p.motor.temperature_c - amb) * losses
        return winding, amb + (p.fluid_temperature_c - amb) * h.shaft

    def _pump_values(
        self, pump: _Pump, h: _Hydraulics, imbalance: float, cavitation: float, bearing: float
    ) -> None:
        p, t, n2 = pump.spec, self.t, (pump.speed / 100.0) ** 2
        amp_m, per_m = MOTOR_CYCLE
        amp_f, per_f = FLUID_CYCLE
        vib = [
            max(VIBRATION_FLOOR_G, rated * n2 * (1 + fx.IMBALANCE_GAIN * imbalance))
            for rated in (p.vibration_1_g, p.vibration_2_g)
        ]
        vib[1] += fx.BEARING_VIBRATION_2_GAIN * p.vibration_2_g * bearing
        pump.values = {
            "flow_rate": h.flow,
            "pressure": h.pressure,
            "vibration_1": vib[0] * (1 + fx.CAVITATION_VIBRATION_GAIN * cavitation**2),
            "vibration_2": vib[1] * (1 + fx.CAVITATION_VIBRATION_GAIN * cavitation**2),
            "current": h.current,
            "voltage": p.motor.voltage_v,
            "motor_temperature": pump.winding_c
            + pump.bearing_c
            + amp_m * math.sin(2 * math.pi * t / per_m + pump.phases[0]),
            "fluid_temperature": pump.fluid_c
            + amp_f * math.sin(2 * math.pi * t / per_f + pump.phases[1]),
            "speed_pct": pump.speed,
        }

    def _hx_values(self, hx: HeatExchangerSpec) -> dict[str, float]:
        pump = self._pumps[self.spec.pump_of(hx).id]
        inlet = pump.values["fluid_temperature"]
        share = min(1.0, pump.values["flow_rate"] / pump.spec.rated_flow_lpm)
        return {"inlet_temperature": inlet, "outlet_temperature": inlet - hx.cooling_c * share}

    def _advance(self) -> dict[str, dict[str, float]]:
        """One step: move actuators, apply faults, update the model, draw noise, read."""
        dt = self.dt
        self._step += 1
        t = self.t
        self.clock.advance_to(t)
        for valve in self._valves.values():
            valve.position = _toward(valve.position, valve.setpoint, valve.spec.stroke_time_s, dt)
            valve.effective = valve.position
        for f in self._faults:
            a = fx.activation(f.spec, t)
            if (
                f.spec.type in (FaultType.INLET_VALVE_CLOSURE, FaultType.OUTLET_VALVE_CLOSURE)
                and f.valve_id is not None
                and f.relieved_at is None
                and a > 0
            ):
                valve = self._valves[f.valve_id]
                valve.effective = min(valve.effective, 100.0 - fx.VALVE_CLOSURE_DEPTH_PCT * a)
        # The same draws every step, whatever the state: commands never shift the noise.
        draws = {
            d.id: [
                self._rng.gauss(0.0, 1.0)
                for _ in range(
                    len(SENSORS[d.type]) + (_EXTRA_DRAWS if isinstance(d, PumpSpec) else 0)
                )
            ]
            for d in self.spec.devices
        }
        values: dict[str, dict[str, float]] = {}
        for pump in self._pumps.values():
            target = pump.setpoint if pump.running else 0.0
            pump.speed = _toward(pump.speed, target, pump.spec.speed_ramp_s, dt)
            values[pump.spec.id] = self._pump_step(pump, t, draws[pump.spec.id])
        for dev in self.spec.devices:
            if isinstance(dev, ValveSpec):
                true = {"position_pct": self._valves[dev.id].effective}
            elif isinstance(dev, TankSpec):
                true = {"level_pct": dev.level_pct}
            elif isinstance(dev, HeatExchangerSpec):
                true = self._hx_values(dev)
            else:
                continue
            values[dev.id] = _noisy(dev.type, true, draws[dev.id])
        self._sensor_faults(values, t)
        for dev_id, readings in values.items():
            for name, value in readings.items():
                self._last[(dev_id, name)] = value
        return {d: values[d] for d in self.device_ids}

    def _pump_step(self, pump: _Pump, t: float, draw: list[float]) -> dict[str, float]:
        pid, speed = pump.spec.id, pump.speed
        cavitation = self._strength(pid, FaultType.CAVITATION, t)
        if speed <= fx.CAVITATION_RELIEF_SPEED_PCT + 1e-9:
            cavitation = 0.0
        bearing = self._strength(pid, FaultType.BEARING_OVERHEATING, t)
        if speed <= fx.BEARING_RELIEF_SPEED_PCT + 1e-9:
            bearing = 0.0
        imbalance = self._strength(pid, FaultType.ROTOR_IMBALANCE, t)
        h = self._pump_hydraulics(pump, cavitation, bearing)
        winding, fluid = self._thermal_targets(pump, h)
        pump.winding_c += (winding - pump.winding_c) * -math.expm1(
            -self.dt / pump.spec.motor.thermal_tau_s
        )
        pump.fluid_c += (fluid - pump.fluid_c) * -math.expm1(-self.dt / FLUID_TAU_S)
        pump.bearing_c += (fx.BEARING_EXCESS_C * bearing - pump.bearing_c) * -math.expm1(
            -self.dt / fx.BEARING_TAU_S
        )
        self._pump_values(pump, h, imbalance, cavitation, bearing)
        n_sensors = len(SENSORS[pump.spec.type])
        out = _noisy(pump.spec.type, pump.values, draw[:n_sensors])
        if cavitation > 0:  # erratic: extra noise while the pump cavitates
            extra = draw[n_sensors:]
            flow_sd = CAVITATION_NOISE[0] * pump.spec.rated_flow_lpm / 125.0
            out["flow_rate"] = max(0.0, out["flow_rate"] + flow_sd * cavitation * extra[0])
            press_sd = CAVITATION_NOISE[1] * pump.spec.rated_pressure_bar
            out["pressure"] = max(0.0, out["pressure"] + press_sd * cavitation * extra[1])
            for i, name in enumerate(("vibration_1", "vibration_2")):
                jitter = CAVITATION_NOISE[2] * cavitation * extra[2 + i]
                out[name] = max(0.0, out[name] + pump.values[name] * jitter)
        return out

    def _sensor_faults(self, values: dict[str, dict[str, float]], t: float) -> None:
        for f in self._faults:
            spec = f.spec
            if spec.type not in (FaultType.SENSOR_STUCK, FaultType.SENSOR_DRIFT):
                continue
            assert spec.sensor is not None
            live = (
                t >= spec.at
                and spec.severity > 0
                and (spec.duration_s is None or t < spec.at + spec.duration_s)
            )
            if not live:
                f.stuck_value = None
                continue
            readings = values[spec.device]
            if spec.type is FaultType.SENSOR_STUCK:
                if f.stuck_value is None:
                    key = (spec.device, spec.sensor)
                    f.stuck_value = self._last.get(key, readings[spec.sensor])
                readings[spec.sensor] = f.stuck_value
            else:
                sd = _NOISE[self.spec.device(spec.device).type][spec.sensor]
                readings[spec.sensor] += (
                    spec.severity * (t - spec.at) / fx.DRIFT_SECONDS_PER_SD * sd
                )


def _noisy(kind: str, true: dict[str, float], draw: Sequence[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for info, g in zip(SENSORS[kind], draw, strict=True):
        value = true[info.name] + info.noise_sd * g
        if info.name in _PERCENT:
            value = min(max(value, 0.0), 110.0 if info.name == "speed_pct" else 100.0)
        elif info.name not in _UNBOUNDED:
            value = max(value, 0.0)
        out[info.name] = value
    return out


def _number(
    device_id: str, command: str, params: dict[str, Any], name: str | None, lo: float, hi: float
) -> float:
    expected = {name} if name else set()
    extra = sorted(set(params) - expected)
    if extra:
        raise ActuatorError(f"{command} on {device_id!r}: unexpected parameter(s) {extra}")
    if name is None:
        return 0.0
    if name not in params:
        raise ActuatorError(f"{command} on {device_id!r}: missing parameter {name!r}")
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActuatorError(
            f"{command} on {device_id!r}: parameter {name!r} must be a finite number, got {value!r}"
        )
    if not lo <= value <= hi:
        raise ActuatorError(
            f"{command} on {device_id!r}: parameter {name!r}={value} is outside {lo:g}..{hi:g}"
        )
    return float(value)


__all__ = ["AppliedCommand", "PlantError", "SimulatedPlant"]
