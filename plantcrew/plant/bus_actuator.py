"""Actuation over the bus: an Operator in one process, the plant's actuator in another.

A worker's Operator cannot call the actuator of a plant that lives in another process (the
scenario runner's simulated plant, or a gateway next to real equipment). :class:`BusActuator`
is the :class:`~plantcrew.plant.actuators.Actuator` such an Operator uses: it sends each
:class:`~plantcrew.plant.actuators.ActuatorCommand` as a request on the plain subject
``plant.commands.<run_id>`` (``plant.commands`` for messages without a run) and waits for the
answer. :class:`PlantGateway` serves that subject next to the plant and hands each command to
the plant's own actuator, which checks the approval token and applies the command at most once
per idempotency key (``SimulatedActuator``, or an adapter for real equipment).

On the wire the command is a ``Task`` (capability ``actuate``) whose ``input`` is
``{"command": <ActuatorCommand as JSON>}``, sent as a reply to the task being handled (same
run, incident, trace; ``causation_id`` = the actuate task). The answer is an ``ActionResult``
whose ``status`` is ``executed`` (first execution), ``already_executed`` (a repeat of the
idempotency key), ``refused`` (the approval check said no) or ``failed``; ``detail`` holds the
receipt as JSON, or the reason.

Failures are never retried blindly: no answer within ``timeout_s`` raises ActuatorError saying
the outcome is unknown (the Operator reports the action failed and the Coordinator escalates to
a person); a refusal raises ApprovalError.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from plantcrew.errors import ApprovalError, BusError, BusTimeout, PlantcrewError
from plantcrew.messages import ActionResult, Capability, Message, Task
from plantcrew.plant.actuators import Actuator, ActuatorCommand, ActuatorError, ActuatorReceipt

if TYPE_CHECKING:
    from plantcrew.bus import Bus, Subscription

log = structlog.get_logger("plantcrew.plant.bus_actuator")

COMMANDS = "plant.commands"
"""Subject prefix of actuator commands: ``plant.commands.<run_id>``."""

PLANT_SOURCE = "plant"


def command_subject(run_id: str | None) -> str:
    """The subject a plant serving ``run_id`` listens on (``plant.commands`` without a run)."""
    return f"{COMMANDS}.{run_id}" if run_id else COMMANDS


class BusActuator:
    """An :class:`Actuator` that sends commands to a :class:`PlantGateway` over the bus.

    ``current`` gives the message being handled (the actuate task), whose run picks the
    subject and which the command replies to; ``source`` names the sender (the agent).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        source: str,
        current: ContextVar[Message | None],
        timeout_s: float = 10.0,
    ) -> None:
        self.bus, self.source, self.current, self.timeout_s = bus, source, current, timeout_s

    def _request(self, cmd: ActuatorCommand) -> Message:
        task = Task(
            task_id=f"cmd-{cmd.idempotency_key}",
            incident_id="",
            capability=Capability.ACTUATE,
            input={"command": cmd.model_dump(mode="json")},
        )
        cause = self.current.get()
        if cause is None:
            return Message.new(task, source=self.source, subject=COMMANDS)
        if isinstance(cause.payload, Task):
            task = task.model_copy(update={"incident_id": cause.payload.incident_id})
        return cause.reply(task, source=self.source, subject=command_subject(cause.run_id))

    async def execute(self, cmd: ActuatorCommand) -> ActuatorReceipt:
        """Send ``cmd`` and return the plant's receipt.

        Raises ApprovalError when the plant refused the token, ActuatorError when it failed
        the command or did not answer within ``timeout_s`` (outcome unknown).
        """
        request = self._request(cmd)
        try:
            reply = await self.bus.request(request, timeout=self.timeout_s)
        except BusTimeout:
            raise ActuatorError(
                f"no answer from the plant on {request.subject} within {self.timeout_s:g} s: "
                f"the outcome of {cmd.command} on {cmd.device_id} is unknown"
            ) from None
        except BusError as exc:
            raise ActuatorError(
                f"cannot reach the plant on {request.subject}: {exc}; the outcome of "
                f"{cmd.command} on {cmd.device_id} is unknown"
            ) from None
        result = reply.payload
        if not isinstance(result, ActionResult) or result.action_id != cmd.action_id:
            raise ActuatorError(f"the plant answered {reply.type} for another action: {reply.id}")
        if result.status == "refused":
            raise ApprovalError(result.detail)
        if result.status == "failed":
            raise ActuatorError(result.detail)
        try:
            receipt = ActuatorReceipt.model_validate_json(result.detail)
        except ValidationError as exc:
            raise ActuatorError(f"the plant's receipt is not valid: {exc}") from None
        return receipt


class PlantGateway:
    """Serves ``plant.commands.<run_id>`` in the process that owns the plant's actuator.

    Each request's command goes to ``actuator.execute`` (which checks the approval token and
    runs each idempotency key at most once); the answer is an ``ActionResult`` (module doc).
    ``handled`` counts the commands answered, by status. ``subject`` overrides the run's
    subject (e.g. ``plant.commands.*``: one gateway for the plant of every run).
    """

    def __init__(
        self, bus: Bus, actuator: Actuator, *, run_id: str | None, subject: str | None = None
    ) -> None:
        self.bus, self.actuator = bus, actuator
        self.subject = subject or command_subject(run_id)
        self.handled: dict[str, int] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe; returns once the subject is served."""
        self._sub = await self.bus.subscribe(self.subject, self._on_command)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_command(self, msg: Message) -> Message | None:
        task = msg.payload
        if not isinstance(task, Task):
            log.warning("not a command", subject=msg.subject, type=msg.type)
            return None
        raw: Any = task.input.get("command")
        try:
            cmd = ActuatorCommand.model_validate(raw)
        except ValidationError as exc:
            action_id = str(raw.get("action_id", "?")) if isinstance(raw, dict) else "?"
            return self._answer(msg, task, action_id, "failed", f"not a valid command: {exc}")
        try:
            receipt = await self.actuator.execute(cmd)
        except ApprovalError as exc:
            return self._answer(msg, task, cmd.action_id, "refused", str(exc))
        except PlantcrewError as exc:
            return self._answer(msg, task, cmd.action_id, "failed", str(exc))
        status = "executed" if receipt.status == "executed" else "already_executed"
        return self._answer(msg, task, cmd.action_id, status, receipt.model_dump_json())

    def _answer(
        self, msg: Message, task: Task, action_id: str, status: Any, detail: str
    ) -> Message:
        self.handled[status] = self.handled.get(status, 0) + 1
        if status in ("refused", "failed"):
            log.warning("command not carried out", action=action_id, status=status, detail=detail)
        result = ActionResult(
            task_id=task.task_id,
            incident_id=task.incident_id,
            agent_id=PLANT_SOURCE,
            action_id=action_id,
            status=status,
            detail=detail,
        )
        return msg.reply(result, source=PLANT_SOURCE, subject=msg.subject)


__all__ = [
    "COMMANDS",
    "BusActuator",
    "PlantGateway",
    "command_subject",
]
