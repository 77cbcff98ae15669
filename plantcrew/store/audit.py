"""The append-only, hash-chained audit log.

Each entry's ``hash`` is SHA-256 over the previous entry's hash and the entry's canonical JSON
(sorted keys, no whitespace) of ``seq, time, actor, kind, run_id, incident_id, data``; the
first entry chains to 64 zeros. Editing, deleting or reordering any entry breaks the chain at
that entry, which :func:`verify_chain` reports.

Writers are serialised by the caller's transaction: on SQLite it holds the database's write
lock (``BEGIN IMMEDIATE``); on PostgreSQL :func:`append` first takes a transaction-level
advisory lock (:data:`AUDIT_LOCK`), released at commit or rollback, so two processes never
read the same last entry and chain to it twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
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
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK})
    last = session.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    seq = (last.seq or 0) + 1 if last else 1
    # round-trip through JSON so the stored data hashes the same when read back
    data = json.loads(json.dumps(data, default=str))

    digest = entry_hash(
        prev,
        seq=seq,
        time=time,
        actor=actor,
        kind=kind,
        run_id=run_id,
        incident_id=incident_id,
        data=data,
    )
    entry = AuditEntry(
        seq=seq,
        time=time,
        actor=actor,
        kind=kind,
        run_id=run_id,
        incident_id=incident_id,
        data=data,
        prev_hash=prev,
        hash=digest,
    )
    session.add(entry)
    session.flush()
    return entry


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
