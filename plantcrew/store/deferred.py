"""Writes a transaction makes at its end, just before it commits.

A transaction opened by :meth:`~plantcrew.store.db.Database.tx` carries a :class:`Deferred`
(``session.info[DEFERRED]``). Two kinds of write wait there:

- messages queued for the outbox (:func:`~plantcrew.store.store.add_outbox`): at commit they
  go into ``message`` and ``outbox`` with one multi-row ``INSERT`` each (in the order they were
  queued; a :func:`~plantcrew.store.store.record_message` in between writes the queue first, so
  the conversation keeps its order). :attr:`Deferred.outbox` then lists the committed rows
  (``seq``, subject, message), so the caller can publish them after commit without reading
  the outbox back;
- additions to the running spend of model calls (:mod:`plantcrew.store.spend`): written
  after the messages, so the day's ``model_spend`` row, which every model call adds to, is
  locked only from there to the commit;
- audit entries (:func:`plantcrew.store.audit.append_deferred`): chained at the very end
  (:func:`plantcrew.store.audit.append_many`), so the audit chain's lock is held only from
  there to the commit, not for the whole transaction.

Nothing changes for readers: every row commits in the same transaction as the state change
that caused it, or not at all.

:attr:`Deferred.committed` holds what a caller wants done once the transaction has committed,
and only then (e.g. remember what it wrote): ``Database.tx`` calls each, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from plantcrew.messages import Message
from plantcrew.store import audit
from plantcrew.store.spend import Deltas, add_spend
from plantcrew.store.tables import MessageRecord, OutboxEntry

DEFERRED = "plantcrew.deferred"
"""Key of a transaction's :class:`Deferred` in ``Session.info``."""

MESSAGE = MessageRecord.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxEntry.__table__  # type: ignore[attr-defined]
# built once, executed with the rows as parameters (SQLAlchemy's compiled cache)
_LOG = insert(MESSAGE)
_QUEUE = insert(OUTBOX).returning(OUTBOX.c.seq, sort_by_parameter_order=True)


@dataclass(frozen=True)
class OutboxRow:
    """A committed outbox row: its ``seq`` (to mark it published), subject and message."""

    seq: int
    subject: str
    message: Message


def message_row(msg: Message, plant_time: float, body: str | None = None) -> dict[str, Any]:
    """The ``message`` table's row of ``msg`` (``body``: its JSON when already made)."""
    return {
        "id": str(msg.id),
        "run_id": msg.run_id,
        "correlation_id": msg.correlation_id,
        "causation_id": str(msg.causation_id) if msg.causation_id else None,
        "type": msg.type,
        "source": msg.source,
        "subject": msg.subject,
        "time": msg.time,
        "plant_time": plant_time,
        "body": body if body is not None else msg.to_bytes().decode(),
    }


@dataclass
class Deferred:
    """What one transaction writes at its end (see module doc)."""

    messages: list[tuple[Message, float]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    spend: Deltas = field(default_factory=dict)
    committed: list[Callable[[], None]] = field(default_factory=list)
    """Called in order once the transaction has committed (never after a rollback); each
    must not raise (the transaction is done: its caller would take it for failed)."""

    def write_messages(self, s: Session) -> None:
        """Insert the queued outbox messages now (conversation log and outbox)."""
        if not self.messages:
            return
        queued, self.messages = self.messages, []
        bodies = [m.to_bytes().decode() for m, _ in queued]  # kept: the bus sends them
        s.execute(
            _LOG,
            [message_row(m, pt, body) for (m, pt), body in zip(queued, bodies, strict=True)],
        )
        result = s.execute(
            _QUEUE,
            [
                {"message_id": str(m.id), "subject": m.subject, "body": body, "published": False}
                for (m, _), body in zip(queued, bodies, strict=True)
            ],
        )
        seqs = [int(row[0]) for row in result]
        self.outbox.extend(
            OutboxRow(seq, m.subject, m) for seq, (m, _) in zip(seqs, queued, strict=True)
        )

    def before_commit(self, s: Session) -> None:
        """Write everything still queued: the messages, the spend, then the audit entries
        (last)."""
        self.write_messages(s)
        if self.spend:
            deltas, self.spend = self.spend, {}
            add_spend(s, deltas)
        if self.audit:
            entries, self.audit = self.audit, []
            audit.append_many(s, entries)


def deferred(s: Session) -> Deferred | None:
    """The :class:`Deferred` of ``s``, or None for a session not opened by ``Database.tx``
    (its writes are then made at once)."""
    found = s.info.get(DEFERRED)
    return found if isinstance(found, Deferred) else None


def committed_outbox(s: Session) -> list[OutboxRow]:
    """The list that holds, once ``s``'s transaction has committed, the outbox rows it wrote
    (empty until then; always empty for a session not opened by ``Database.tx``)."""
    d = deferred(s)
    return d.outbox if d is not None else []


__all__ = ["DEFERRED", "Deferred", "OutboxRow", "committed_outbox", "deferred", "message_row"]
