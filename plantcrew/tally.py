"""Per-thread tallies of the bus's messages, exported as Prometheus metric families.

The bus counts every publish and every delivery (with the handler's latency). With
``prometheus_client`` objects that costs about 2 us a message (``.labels()`` lookups, a lock per
increment, a Python loop over the histogram's buckets), as much as validating the message.
:class:`MessageTally` keeps the same counts in plain lists instead, one dict of rows per thread
(a thread writes only its own rows, so no lock and no lost update), keyed by the raw subject
and message type; a scrape sums them over threads and folds subjects into their labels
(``plantcrew.metrics.subject_label``). What a scrape shows is what the ``Counter`` and
``Histogram`` objects showed: ``<prefix>messages_published_total{subject,type}``,
``<prefix>messages_handled_total{subject,type,outcome}`` (``ok`` / ``error``) and
``<prefix>handler_duration_seconds{subject,type}`` with the given buckets (no ``_created``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Row = list[float]
# a row: [published, handled ok, handled error, one count per bucket..., +Inf count, seconds]
_PUBLISHED, _OK, _ERROR, _FIRST_BUCKET = 0, 1, 2, 3


class MessageTally(Collector):
    """Counts of published and handled messages and handler seconds, per (subject, type).

    ``prefix`` starts every metric name (``"plantcrew_"``); ``buckets`` are the histogram's
    upper bounds in seconds, ascending; ``label_of`` folds a subject to its label. Register it
    in a ``CollectorRegistry`` to export it. Safe from any thread.
    """

    def __init__(
        self,
        prefix: str,
        *,
        buckets: Sequence[float],
        label_of: Callable[[str], str],
        help_published: str,
        help_handled: str,
        help_seconds: str,
    ) -> None:
        self.prefix, self.label_of = prefix, label_of
        self.bounds = tuple(float(b) for b in buckets)
        self._first_bound = self.bounds[0] if self.bounds else float("inf")
        self.help = (help_published, help_handled, help_seconds)
        self._width = _FIRST_BUCKET + len(self.bounds) + 2
        self._local = threading.local()
        self._threads: list[dict[tuple[str, str], Row]] = []
        self._lock = threading.Lock()

    # ---- counting (the hot path) ---------------------------------------------------------
    def _row(self, subject: str, msg_type: str) -> Row:
        """This thread's row for (subject, type), made on first use."""
        try:
            rows: dict[tuple[str, str], Row] = self._local.rows
        except AttributeError:
            rows = self._local.rows = {}
            with self._lock:
                self._threads.append(rows)
        row = rows.get((subject, msg_type))
        if row is None:
            row = rows[(subject, msg_type)] = [0.0] * self._width
        return row

    def published(self, subject: str, msg_type: str) -> None:
        """Count one publish of a ``msg_type`` message on ``subject``."""
        try:
            self._local.rows[subject, msg_type][_PUBLISHED] += 1
        except (AttributeError, KeyError):  # this thread's first count, or a new key
            self._row(subject, msg_type)[_PUBLISHED] += 1

    def handled(self, subject: str, msg_type: str, ok: bool, seconds: float) -> None:
        """Count one delivery handled (``ok``: returned; else raised) in ``seconds``."""
        try:
            row = self._local.rows[subject, msg_type]
        except (AttributeError, KeyError):  # this thread's first count, or a new key
            row = self._row(subject, msg_type)
        row[_OK if ok else _ERROR] += 1
        if seconds <= self._first_bound:  # the usual case: no search (a negative counts as 0)
            row[_FIRST_BUCKET] += 1
            if seconds > 0.0:
                row[-1] += seconds
        else:
            row[_FIRST_BUCKET + bisect_left(self.bounds, seconds)] += 1
            row[-1] += seconds

    # ---- export --------------------------------------------------------------------------
    def totals(self) -> dict[tuple[str, str], Row]:
        """Rows summed over threads, keyed by (subject label, type)."""
        with self._lock:
            threads = list(self._threads)
        merged: dict[tuple[str, str], Row] = {}
        for rows in threads:
            for (subject, msg_type), row in list(rows.items()):
                key = (self.label_of(subject), msg_type)
                into = merged.get(key)
                if into is None:
                    into = merged[key] = [0.0] * self._width
                for i, value in enumerate(list(row)):
                    into[i] += value
        return merged

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily, HistogramMetricFamily]:
        help_published, help_handled, help_seconds = self.help
        return (
            CounterMetricFamily(
                f"{self.prefix}messages_published", help_published, labels=["subject", "type"]
            ),
            CounterMetricFamily(
                f"{self.prefix}messages_handled",
                help_handled,
                labels=["subject", "type", "outcome"],
            ),
            HistogramMetricFamily(
                f"{self.prefix}handler_duration_seconds",
                help_seconds,
                labels=["subject", "type"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        """The families' names, for the registry's duplicate check (no counts)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The three families with the counts so far."""
        published, handled, seconds = self._families()
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        last = _FIRST_BUCKET + len(les)
        for (label, msg_type), row in sorted(self.totals().items()):
            if row[_PUBLISHED]:
                published.add_metric([label, msg_type], row[_PUBLISHED])
            if row[_OK] or row[_ERROR]:
                handled.add_metric([label, msg_type, "ok"], row[_OK])
                handled.add_metric([label, msg_type, "error"], row[_ERROR])
                cumulative, running = [], 0.0
                for le, count in zip(les, row[_FIRST_BUCKET:last], strict=True):
                    running += count
                    cumulative.append((le, running))
                seconds.add_metric([label, msg_type], cumulative, row[-1])
        yield published
        yield handled
        yield seconds


__all__ = ["MessageTally"]
