"""Incidents as this Coordinator last wrote them, so that a task result needs no read of its
incident.

A task result (diagnosis, proposal, safety decision, action result, review) starts by reading
its incident: does the result answer the incident's current task? The Coordinator itself
wrote that incident when it routed the task, usually moments before. :class:`KnownIncidents`
keeps the row as it was written (every column, version included), once its transaction has
committed, for the incidents whose status is one of ``active`` (at most ``limit``, the oldest
forgotten first).

The database stays the truth:

- a result that does not answer the known incident's current task (or whose incident is not
  known) is checked against the database, which decides whether it is stale;
- a known incident is only changed through ``save_incident``, whose version check fails when
  anyone (another Coordinator process, another transaction) wrote the incident since. Then
  the Coordinator forgets it and raises :class:`StaleIncident`, and the event is applied
  again, reading the incident (``Coordinator.apply``; a group commit applies its events one
  by one);
- what a transaction wrote is kept only once it commits (``Deferred.committed``), and a
  newer version is never replaced by an older one (two transactions of this process may
  commit in either order); within a transaction, the incident as it wrote it is used.

A copy shares the JSON values (``data``, ``anomaly``) of the row kept: the Coordinator
replaces them (``inc.data = {**inc.data, ...}``) and never changes them in place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from plantcrew.errors import ConflictError
from plantcrew.store import Incident
from plantcrew.store.deferred import deferred
from plantcrew.store.rows import detached, row_of


class StaleIncident(ConflictError):
    """An incident this Coordinator knew was changed since by someone else (its save's version
    check failed); it is forgotten, and the event applied again reads it."""


@dataclass
class _Transaction:
    """What one transaction wrote and which known incidents it used."""

    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)


class KnownIncidents:
    """The active incidents one Coordinator wrote, as it wrote them (see module doc).
    Thread-safe: a host applies events in several database threads."""

    def __init__(self, active: Collection[str], limit: int = 4096) -> None:
        self.active, self.limit = frozenset(active), limit
        self._rows: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, s: Session, incident_id: str) -> Incident | None:
        """A copy of incident ``incident_id`` as transaction ``s`` or, before it, this
        Coordinator last wrote it (None when not known); :meth:`use` it before changing it."""
        tx = s.info.get(self)
        row = tx.written.get(incident_id) if tx is not None else None
        if row is None:
            with self._guard:
                row = self._rows.get(incident_id)
        return None if row is None else detached(Incident, dict(row))

    def use(self, s: Session, incident_id: str) -> None:
        """Say that ``s`` goes on with the known copy of ``incident_id`` (not read)."""
        self._transaction(s).used.add(incident_id)

    def used(self, s: Session, incident_id: str) -> bool:
        """True when ``s`` went on with the known copy of ``incident_id``."""
        tx = s.info.get(self)
        return tx is not None and incident_id in tx.used

    def wrote(self, s: Session, inc: Incident) -> None:
        """``inc`` was written (inserted or saved) in ``s`` as it is now: known to ``s`` at once,
        and to every transaction once ``s`` commits."""
        self._transaction(s).written[inc.id] = row_of(inc)

    def forget(self, incident_id: str) -> None:
        """Read incident ``incident_id`` from the database next time."""
        with self._guard:
            self._rows.pop(incident_id, None)

    def _transaction(self, s: Session) -> _Transaction:
        tx = s.info.get(self)
        if tx is None:
            tx = s.info[self] = _Transaction()
            work = deferred(s)
            if work is not None:  # elsewhere nothing is kept: no commit to wait for
                work.committed.append(lambda: self._keep(tx.written.values()))
        assert isinstance(tx, _Transaction)
        return tx

    def _keep(self, rows: Iterable[dict[str, Any]]) -> None:
        with self._guard:
            for row in rows:
                known = self._rows.get(row["id"])
                if known is not None and known["version"] > row["version"]:
                    continue  # a transaction that committed after wrote a newer one
                if row["status"] in self.active:
                    self._rows[row["id"]] = row
                    self._rows.move_to_end(row["id"])
                else:
                    self._rows.pop(row["id"], None)
            while len(self._rows) > self.limit:
                self._rows.popitem(last=False)


__all__ = ["KnownIncidents", "StaleIncident"]
