"""The memory a diagnose task carries: the lessons the Diagnostic's recall can use.

For each new incident the Coordinator puts lessons into the diagnose task, so that the
conversation holds everything the diagnosis depended on (a replay needs no other state).
:meth:`LessonRecall.lessons` gives the ``limit`` newest confirmed lessons and the ``limit``
newest corrections (``feedback``), oldest first, identical ones (same root cause, source and
signature) merged into one whose ``weight`` is their sum and ``count`` their number.

Given the :class:`~plantcrew.detect.signatures.SignatureBook` the Diagnostic uses and the
anomaly's deviations, it keeps only the lessons that :func:`~plantcrew.detect.diagnosis.recall`
would use: those whose z signature's :func:`~plantcrew.detect.diagnosis.similarity` with the
anomaly's pattern is ``min_similarity`` or more. The others change no diagnosis (recall skips
them), so the diagnosis is the same, and a task stays small however many lessons the plant has
learnt: a thousand distinct lessons of eight sensors made every diagnose task 265 kB
(measured with z to four decimals; NATS refuses messages over 1 MB by default), stored again
in the conversation log and the outbox.

Lesson rows are written once and never changed, so each row's cause, source, signature, merge
key and compressed pattern are kept by id. A call reads the ids and weights of the newest rows,
and the full rows only of those it has not seen: a Coordinator used to read and decode every
signature (up to ``2 * limit`` of them) for each new incident. The similarity is computed once
per distinct signature of a call (lessons of a recurring fault share theirs): it was most of a
call's CPU, 3.7 ms for 900 lessons of one signature.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session

from plantcrew.detect.diagnosis import anomaly_pattern, pattern, similarity
from plantcrew.detect.signatures import SignatureBook
from plantcrew.messages import Deviation
from plantcrew.store import Lesson

LESSON = Lesson.__table__  # type: ignore[attr-defined]
SOURCES = ("confirmed", "feedback")
"""The sources of lessons a task carries: incidents confirmed by their review, corrections."""


def _newest(source: str) -> Any:
    return (
        sa_select(LESSON.c.id, LESSON.c.weight)
        .where(LESSON.c.source == source)
        .order_by(LESSON.c.id.desc())
        .limit(bindparam("limit"))
        .subquery()
    )


# the ids and weights of the ``limit`` newest lessons of each source, in one read
_NEWEST = union_all(*(sa_select(q.c.id, q.c.weight) for q in map(_newest, SOURCES)))
_ROWS = sa_select(LESSON.c.id, LESSON.c.root_cause, LESSON.c.signature, LESSON.c.source).where(
    LESSON.c.id.in_(bindparam("ids", expanding=True))
)
_READ_BATCH = 500  # ids per query for the rows not seen yet


@dataclass(frozen=True)
class _Row:
    """What a call needs of one lesson row (immutable: lessons are never updated)."""

    root_cause: str
    source: str
    signature: dict[str, float]
    key: tuple[str, str, str]  # merge key: cause, source, canonical JSON of the signature
    pattern: dict[str, float] | None  # compressed with the book's noise_z (None: no book)


class LessonRecall:
    """Reads the lessons a diagnose task carries (see module doc); one per Coordinator host,
    shared by its Coordinators and their database threads.

    ``signatures``: the book the Diagnostic ranks with; None keeps every lesson (no filter).
    """

    def __init__(self, signatures: SignatureBook | None = None) -> None:
        self.signatures = signatures
        self._rows: dict[int, _Row] = {}

    def lessons(
        self, s: Session, limit: int, deviations: Sequence[Deviation] | None = None
    ) -> list[dict[str, Any]]:
        """Lessons as dicts (``root_cause``, ``signature``, ``weight``, ``source``,
        ``count``), oldest first; with ``deviations`` and a book, only the recallable ones."""
        newest = sorted((int(i), float(w)) for i, w in s.execute(_NEWEST, {"limit": limit}))
        rows = self._rows
        missing = [i for i, _ in newest if i not in rows]
        for start in range(0, len(missing), _READ_BATCH):
            ids = missing[start : start + _READ_BATCH]
            for i, cause, signature, source in s.execute(_ROWS, {"ids": ids}):
                rows[int(i)] = self._row(cause, source, signature)
        book = self.signatures
        u = anomaly_pattern(deviations, book.noise_z) if book and deviations is not None else None
        merged: dict[tuple[str, str, str], dict[str, Any]] = {}
        recalled: dict[str, bool] = {}  # signature (its JSON) -> would recall use it?
        for i, weight in newest:
            row = rows[i]
            if u is not None and book is not None:
                near = recalled.get(row.key[2])
                if near is None:  # once per signature: lessons of one fault repeat theirs
                    near = bool(u) and similarity(u, row.pattern or {}) >= book.min_similarity
                    recalled[row.key[2]] = near
                if not near:
                    continue  # recall would skip it (see plantcrew.detect.diagnosis.recall)
            hit = merged.get(row.key)
            if hit is not None:
                hit["weight"] += weight
                hit["count"] += 1
            else:
                merged[row.key] = {
                    "root_cause": row.root_cause,
                    "signature": row.signature,
                    "weight": weight,
                    "source": row.source,
                    "count": 1,
                }
        if len(rows) > 2 * len(newest) + _READ_BATCH:  # keep the rows still among the newest
            self._rows = {i: rows[i] for i, _ in newest}
        return list(merged.values())

    def _row(self, cause: str, source: str, signature: dict[str, float]) -> _Row:
        book = self.signatures
        return _Row(
            root_cause=cause,
            source=source,
            signature=signature,
            key=(cause, source, json.dumps(signature, sort_keys=True)),
            pattern=pattern(signature, book.noise_z) if book is not None else None,
        )


__all__ = ["LessonRecall"]
