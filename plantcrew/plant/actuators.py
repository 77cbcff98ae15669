"""Actuators: the one interface through which an action reaches equipment.

:class:`Actuator` is THE adapter interface. The crew's Operator hands every approved action to
an ``Actuator`` as an :class:`ActuatorCommand` and gets an :class:`ActuatorReceipt` back;
:class:`SimulatedActuator` drives the simulated plant, and adapters for real equipment
implement the same protocol.

Implementing an adapter for real equipment (Modbus/TCP, OPC UA)
---------------------------------------------------------------
1. Idempotency. ``idempotency_key`` identifies one intended actuation. Keep the keys you have
   executed, with their receipts, in durable storage shared by every adapter instance (the
   database, or the controller itself, e.g. a PLC register holding the last key's hash).
   A repeat of a key returns the first receipt with status ``duplicate`` and writes nothing;
   the same key with a different device/command/parameters is refused (ActuatorError).
   Look the key up *before* checking the approval: an approval token is single-use, so a
   redelivered command must be answered from the receipt, not refused for a spent token.
2. Approval. Before writing anything, call the Safety layer's verifier with the command; it
   raises :class:`~plantcrew.errors.ApprovalError` for a forged, reused, expired or mismatched
   ``approval_token``. Never write to equipment when it raises.
3. Mapping. Translate ``(device_id, command, parameters)`` to the protocol's writes from a
   configured tag map, e.g. ``set_speed {speed_pct}`` -> Modbus holding register 40010 =
   ``round(speed_pct * 10)`` (write single register, FC 06), or OPC UA ``Write`` of
   ``ns=2;s=Pump1.SpeedSetpoint`` (Double). Unknown devices, commands or out-of-range
   parameters raise ActuatorError before any I/O.
4. Timeouts. Bound every network call (connect, write, read) by a timeout, e.g. 2 s, with at
   most one reconnect; on timeout raise ActuatorError: the command's outcome is then
   unknown and the caller escalates to a person instead of retrying blindly.
5. Read-back. After the write, read the setpoint (or the device's feedback) back and compare
   within its tolerance; put what was read in ``detail``. A mismatch raises ActuatorError.
6. Receipt. Return ``status="executed"`` with ``ts`` taken from the adapter's clock (plant
   seconds of the run).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from plantcrew.errors import PlantcrewError


class ActuatorError(PlantcrewError):
    """An actuator refused or failed a command: unknown device or command, a bad parameter,
    a reused idempotency key, or (for real equipment) a timeout or read-back mismatch.
    The message names the device, command or parameter at fault."""


class ActuatorCommand(BaseModel):
    """One action for an actuator to carry out.

    ``parameters`` are the command's arguments (e.g. ``{"speed_pct": 80}``);
    ``idempotency_key`` makes a redelivered command run at most once; ``approval_token`` is
    what the Safety layer issued for this action (None for actions that need none).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action_id: str = Field(min_length=1, description="the action this command carries out")
    device_id: str = Field(min_length=1, description="the device to act on")
    command: str = Field(min_length=1, description="e.g. set_speed, stop, start, set_position")
    parameters: dict[str, Any] = Field(default_factory=dict, description="command arguments")
    idempotency_key: str = Field(min_length=1, description="one key per intended actuation")
    approval_token: str | None = Field(None, description="Safety layer's token, if required")


class ActuatorReceipt(BaseModel):
    """What an actuator did with a command: ``executed`` now, or ``duplicate`` of an earlier
    execution of the same idempotency key (then ``detail`` and ``ts`` are the first ones)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action_id: str
    idempotency_key: str
    status: Literal["executed", "duplicate"]
    detail: str = ""
    ts: float = Field(ge=0, description="plant seconds when the command was executed")


@runtime_checkable
class Actuator(Protocol):
    """THE adapter interface for equipment (see the module docstring for how to implement it).

    ``execute`` returns an :class:`ActuatorReceipt` or raises: ActuatorError (refused or
    failed, outcome stated in the message) or ApprovalError (the approval check said no).
    """

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        """Carry out ``cmd`` at most once per idempotency key."""
        ...


class CommandTarget(Protocol):
    """What :class:`SimulatedActuator` drives: a plant with a clock and ``apply``."""

    @property
    def t(self) -> float: ...

    def apply(self, device_id: str, command: str, parameters: dict[str, Any]) -> str: ...


def _same_action(a: ActuatorCommand, b: ActuatorCommand) -> bool:
    return (a.device_id, a.command, a.parameters) == (b.device_id, b.command, b.parameters)


class SimulatedActuator:
    """Drives a simulated plant (anything with ``t`` and ``apply``, see :class:`CommandTarget`).

    ``verify_approval(cmd)``, when given, is called before the plant is touched and raises to
    refuse (the Safety layer supplies it). Each idempotency key runs at most once: a repeat
    with the same device/command/parameters returns the first receipt with status
    ``duplicate``, without calling ``verify_approval`` again (the token was already spent) and
    without touching the plant; a repeat with different ones raises ActuatorError. Keys are
    kept in memory for the actuator's lifetime.
    """

    def __init__(
        self,
        plant: CommandTarget,
        verify_approval: Callable[[ActuatorCommand], None] | None = None,
    ) -> None:
        self._plant = plant
        self._verify = verify_approval
        self._done: dict[str, tuple[ActuatorCommand, ActuatorReceipt]] = {}
        self._lock = asyncio.Lock()

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        """Verify the approval, apply the command to the plant once, return the receipt.

        Raises whatever ``verify_approval`` raises (e.g. ApprovalError), and ActuatorError for
        an unknown device or command, a bad parameter, or a key reused for another action.
        """
        async with self._lock:
            seen = self._done.get(cmd.idempotency_key)
            if seen is not None:
                first, receipt = seen
                if not _same_action(first, cmd):
                    raise ActuatorError(
                        f"idempotency key {cmd.idempotency_key!r} was used for "
                        f"{first.command} on {first.device_id!r}, not {cmd.command} on "
                        f"{cmd.device_id!r} {cmd.parameters}"
                    )
                return receipt.model_copy(update={"status": "duplicate"})
            if self._verify is not None:
                self._verify(cmd)
            detail = self._plant.apply(cmd.device_id, cmd.command, dict(cmd.parameters))
            ts = self._plant.t
            receipt = ActuatorReceipt(
                action_id=cmd.action_id,
                idempotency_key=cmd.idempotency_key,
                status="executed",
                detail=detail,
                ts=ts if math.isfinite(ts) and ts >= 0 else 0.0,
            )
            self._done[cmd.idempotency_key] = (cmd, receipt)
            return receipt


__all__ = [
    "Actuator",
    "ActuatorCommand",
    "ActuatorError",
    "ActuatorReceipt",
    "CommandTarget",
    "SimulatedActuator",
]
