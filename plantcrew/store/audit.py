"""The append-only, hash-chained audit log.

Each entry's ``hash`` is SHA-256 over the previous entry's hash and the entry's canonical JSON
(sorted keys, no whitespace) of ``seq, time, actor, kind, run_id, incident_id, data``; the
first entry chains to 64 zeros. Editing, deleting or reordering any entry breaks the chain at
that entry, which :func:`verify_chain` reports.

Writers are serialised by the caller's transaction: on SQLite it holds the database's write
lock (``BEGIN IMMEDIATE``); on PostgreSQL :func:`append` first takes a transaction-level
advisory lock (:data:`AUDIT_LOCK`), released at commit or rollback, so two processes never
read the same last entry and chain to it twice. The lock is held to the commit, so a
transaction should chain its entries as late as it can: :func:`append_many` chains several
with one lock and one insert, and :func:`append_deferred` leaves them to the end of a
``Database.tx`` transaction (:mod:`plantcrew.store.deferred`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session, col, select

from plantcrew.store.tables import AuditEntry

GENESIS = "0" * 64
AUDIT_LOCK = 0x706C616E74637202
"""PostgreSQL advisory lock key of the audit chain (``"plantc"`` + ``0x7202``)."""


def entry_hash(
    prev_hash: str,
    *,
    seq: int,
    time: datetime,
    actor: str,
    kind: str,
    run_id: str | None,
    incident_id: str | None,
    data: dict[str, Any],
) -> str:
    """SHA-256 hex digest chaining one entry to ``prev_hash``."""
    body = json.dumps(
        {
            "seq": seq,
            "time": time.isoformat(),
            "actor": actor,
            "kind": kind,
            "run_id": run_id,
            "incident_id": incident_id,
            "data": data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


_AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]
# built once, executed with parameters (SQLAlchemy's compiled cache)
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_LAST = select(_AUDIT.c.hash, _AUDIT.c.seq).order_by(_AUDIT.c.seq.desc()).limit(1)
_INSERT = insert(_AUDIT)


def _lock_and_last(session: Session) -> tuple[str, int]:
    """Take the chain's lock (PostgreSQL) and read its last ``(hash, seq)``."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK, {"key": AUDIT_LOCK})
    last = session.execute(_LAST).first()
    return (str(last[0]), int(last[1] or 0)) if last else (GENESIS, 0)


def _utc(when: datetime) -> datetime:
    """An aware ``when`` in UTC (a naive one is left for the column to refuse)."""
    return when.astimezone(UTC) if when.tzinfo is not None else when


def append(
    session: Session,
    *,
    time: datetime,
    actor: str,
    kind: str,
    data: dict[str, Any],
    run_id: str | None = None,
    incident_id: str | None = None,
) -> AuditEntry:
    """Append one entry inside the caller's transaction (which serialises writers)."""
    entry = dict(time=time, actor=actor, kind=kind, data=data, run_id=run_id)
    return AuditEntry(**append_many(session, [{**entry, "incident_id": incident_id}])[0])


def append_many(session: Session, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append ``entries`` (each a dict of :func:`append`'s keyword arguments), in order, inside
    the caller's transaction: one lock, one read of the last entry, one multi-row insert.
    Returns the rows written (the ``audit`` table's columns, seq and hashes filled in), as
    dicts: the Coordinator's entries are written, never read back, and a table object costs
    about 0.1 CPU ms to make."""
    if not entries:
        return []
    prev, seq = _lock_and_last(session)
    rows: list[dict[str, Any]] = []
    for e in entries:
        seq += 1
        fields: dict[str, Any] = {
            "seq": seq,
            # the database keeps the instant in UTC: hash that form, so the entry verifies
            "time": _utc(e["time"]),
            "actor": e["actor"],
            "kind": e["kind"],
            "run_id": e.get("run_id"),
            "incident_id": e.get("incident_id"),
            # round-trip through JSON so the stored data hashes the same when read back
            "data": json.loads(json.dumps(e["data"], default=str)),
        }
        digest = entry_hash(prev, **fields)
        rows.append({**fields, "prev_hash": prev, "hash": digest})
        prev = digest
    session.execute(_INSERT, rows)
    return rows


def append_deferred(session: Session, **entry: Any) -> None:
    """:func:`append` (same keyword arguments), except that in a transaction of
    ``Database.tx`` the entry is chained when the transaction commits
    (:mod:`plantcrew.store.deferred`), so the chain's lock is held only from there to the
    commit. Elsewhere it is appended at once."""
    from plantcrew.store.deferred import deferred

    work = deferred(session)
    if work is None:
        append_many(session, [entry])
    else:
        work.audit.append(entry)


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain breaks: the entry ``seq`` and what is wrong with it."""

    seq: int
    problem: str


def verify_chain(session: Session) -> list[ChainBreak]:
    """Check every entry in order; returns the breaks found (empty when intact)."""
    breaks: list[ChainBreak] = []
    prev, expected_seq = GENESIS, 1
    for e in session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))):
        seq = e.seq or 0
        if seq != expected_seq:
            breaks.append(ChainBreak(seq, f"entry {expected_seq} is missing (deleted?)"))
        if e.prev_hash != prev:
            breaks.append(
                ChainBreak(seq, "prev_hash does not match the entry before (reordered or deleted)")
            )
        digest = entry_hash(
            e.prev_hash,
            seq=seq,
            time=e.time,
            actor=e.actor,
            kind=e.kind,
            run_id=e.run_id,
            incident_id=e.incident_id,
            data=e.data,
        )
        if digest != e.hash:
            breaks.append(ChainBreak(seq, "content does not match its hash (edited)"))
        prev, expected_seq = e.hash, seq + 1
    return breaks
