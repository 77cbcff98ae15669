"""The one error root of plantcrew and its tree.

Every error plantcrew raises on purpose derives from :class:`PlantcrewError`, so a caller can
catch all of them with one ``except`` and still tell them apart by class.
"""

from __future__ import annotations

from collections.abc import Sequence


class PlantcrewError(Exception):
    """Root of every error plantcrew raises on purpose."""


class ConfigError(PlantcrewError):
    """A configuration or scenario file is invalid.

    ``source`` names the file, ``line`` (1-based, when known) and ``field`` (a dotted path,
    when known) locate what was wrong.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source, self.line, self.field, self.reason = source, line, field, message
        where = ""
        if source:
            where = source + (f":{line}" if line else "")
        if field:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)


class MessageValidationError(PlantcrewError):
    """A message failed validation; ``errors`` holds ``(field_path, reason)`` pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]], *, raw: bytes | None = None) -> None:
        self.errors = list(errors)
        self.raw = raw
        detail = "; ".join(f"{path or '<root>'}: {reason}" for path, reason in self.errors)
        super().__init__(f"invalid message: {detail}")


class BusError(PlantcrewError):
    """The message bus failed (connection lost, publish not acknowledged, bad subject)."""


class BusTimeout(BusError):
    """A request on the bus got no reply in time."""


class MessageTooLarge(BusError):
    """A message is over the bus's ``max_message_bytes``; nothing was sent. ``subject``,
    ``size`` and ``limit`` (bytes) say which, how big, and the limit."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        self.subject, self.size, self.limit = subject, size, limit
        super().__init__(
            f"message of {size} bytes for {subject!r} is over the bus's max_message_bytes "
            f"of {limit} bytes"
        )


class ReplyTooLarge(MessageTooLarge):
    """The reply to a ``request`` on ``subject`` was over the responder's ``max_message_bytes``
    (``limit``; ``size`` bytes): the request was handled, but its reply was not sent. The
    responder's bus sends a refusal instead, so the requester hears it at once, not as a
    timeout (see ``plantcrew.bus.base``)."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        self.subject, self.size, self.limit = subject, size, limit
        BusError.__init__(
            self,
            f"reply of {size} bytes to a request on {subject!r} is over the responder's "
            f"max_message_bytes of {limit} bytes: the request was handled, its reply not sent",
        )


class StoreError(PlantcrewError):
    """The database failed or refused a change."""


class ConflictError(StoreError):
    """An optimistic-locking conflict: the row changed since it was read."""


class NotFoundError(StoreError):
    """A row that was asked for does not exist."""


class StoreUnavailable(StoreError):
    """The database cannot serve now; trying again later may work. ``cause`` says why:
    ``"unreachable"`` (connection refused, lost or not opened) or ``"busy"`` (locked, or no
    pooled connection free in time)."""

    def __init__(self, cause: str, message: str) -> None:
        self.cause = cause
        super().__init__(message)


class ModelError(PlantcrewError):
    """Every model of a group failed, or a model answered with something unusable."""


class BudgetExceeded(ModelError):
    """A token or cost budget is spent; the step must run on the playbook model."""


class SafetyError(PlantcrewError):
    """An action was refused by policy or by the actuator's approval check."""


class ApprovalError(SafetyError):
    """An approval token is forged, reused, expired or names another action."""


class VoteRefused(SafetyError):
    """A person's vote on an approval is refused before it is stored: it could never count.

    ``forbidden`` is True when the person's plant role may not decide that approval (the API
    answers 403), False when the approval's state refuses the vote: no longer pending, past
    its deadline, decided by that person already, or their vote still waiting (409).
    """

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        self.forbidden = forbidden
        super().__init__(message)


class ScenarioError(PlantcrewError):
    """A scenario could not run (not the same as an expectation that failed)."""
