"""The simulated plant, its clock, and the actuator interface equipment adapters implement.

``SimulatedPlant`` steps a seeded model of pumps, valves, tanks and heat exchangers built from
a ``PlantSpec`` with injected ``FaultSpec`` faults; ``SimulatedActuator`` applies approved
actions to it through the ``Actuator`` protocol that real equipment adapters implement too.
"""

from plantcrew.plant.actuators import (
    Actuator,
    ActuatorCommand,
    ActuatorError,
    ActuatorReceipt,
    CommandTarget,
    SimulatedActuator,
)
from plantcrew.plant.clock import DEFAULT_START, Clock, ClockError, Pacer, SimClock, WallClock
from plantcrew.plant.faults import SIGNATURES, Signature, activation
from plantcrew.plant.sim import AppliedCommand, PlantError, SimulatedPlant
from plantcrew.plant.spec import (
    SENSORS,
    DeviceSpec,
    FaultSpec,
    FaultType,
    HeatExchangerSpec,
    MotorSpec,
    PlantSpec,
    PumpSpec,
    SensorInfo,
    TankSpec,
    ValveSpec,
    check_faults,
    default_plant,
)

__all__ = [
    "DEFAULT_START",
    "SENSORS",
    "SIGNATURES",
    "Actuator",
    "ActuatorCommand",
    "ActuatorError",
    "ActuatorReceipt",
    "AppliedCommand",
    "Clock",
    "ClockError",
    "CommandTarget",
    "DeviceSpec",
    "FaultSpec",
    "FaultType",
    "HeatExchangerSpec",
    "MotorSpec",
    "Pacer",
    "PlantError",
    "PlantSpec",
    "PumpSpec",
    "SensorInfo",
    "Signature",
    "SimClock",
    "SimulatedActuator",
    "SimulatedPlant",
    "TankSpec",
    "ValveSpec",
    "WallClock",
    "activation",
    "check_faults",
    "default_plant",
]
