"""Metrics computed from the database at scrape time (exposed once, by the API service).

What the crew records in the store is counted here, so no layer needs extra calls and the
figures survive restarts and sum over every worker: incidents by status, time to detect and
to resolve, actions by status, approvals pending (and the longest wait), model calls, tokens,
cost and fallbacks, recorded dead letters.

Times are plant seconds (wall seconds in live operation):
- time to detect: from the first reading the Monitor flagged (``Incident.detected_at``) to the
  incident's opening (``opened_at``): the detector's confirmation delay.
- time to resolve: from ``detected_at`` to ``resolved_at`` (resolved incidents only).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from plantcrew.crews.clocks import run_plant_time
from plantcrew.errors import StoreError
from plantcrew.store import (
    Action,
    Approval,
    DeadLetterRecord,
    Incident,
    ModelCall,
    Run,
    Store,
)

log = structlog.get_logger("plantcrew.api.metrics")
DETECT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RESOLVE_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
N = "plantcrew_"


def histogram(
    name: str, doc: str, values: Iterable[float], buckets: Sequence[float]
) -> HistogramMetricFamily:
    """A Prometheus histogram family of ``values`` (cumulative ``le`` buckets, +Inf last)."""
    counts = [0] * (len(buckets) + 1)
    total = 0.0
    for v in values:
        counts[bisect_left(buckets, v)] += 1
        total += v
    cumulative, running = [], 0
    for bound, c in zip([*map(str, buckets), "+Inf"], counts, strict=True):
        running += c
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


class StoreCollector(Collector):
    """A prometheus_client collector reading ``store`` at each scrape (see module doc)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(N + "store_scrape_ok", "1 when the database answered the scrape.")
        try:
            with self.store.tx() as s:
                families = list(self._families(s))
        except StoreError as exc:
            log.warning("metrics scrape of the store failed", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, s: Session) -> Iterator[Metric]:
        inc = GaugeMetricFamily(N + "incidents", "Incidents by status now.", labels=["status"])
        for status, n in s.exec(
            select(Incident.status, func.count()).group_by(col(Incident.status))
        ).all():
            inc.add_metric([status], n)
        yield inc
        rows = s.exec(select(Incident.detected_at, Incident.opened_at, Incident.resolved_at)).all()
        yield histogram(
            N + "time_to_detect_seconds",
            "Plant seconds from the first flagged reading to the incident's opening.",
            (max(0.0, o - d) for d, o, _ in rows),
            DETECT_BUCKETS,
        )
        yield histogram(
            N + "time_to_resolve_seconds",
            "Plant seconds from the first flagged reading to resolution (resolved incidents).",
            (max(0.0, r - d) for d, _, r in rows if r is not None),
            RESOLVE_BUCKETS,
        )
        acts = GaugeMetricFamily(N + "actions", "Actions by status now.", labels=["status"])
        for status, n in s.exec(
            select(Action.status, func.count()).group_by(col(Action.status))
        ).all():
            acts.add_metric([status], n)
        yield acts
        yield from self._approvals(s)
        yield from self._model_calls(s)
        dead = CounterMetricFamily(
            N + "dead_letters_recorded",
            "Dead-lettered and quarantined messages recorded in the store.",
            labels=["quarantined"],
        )
        for quarantined, n in s.exec(
            select(DeadLetterRecord.quarantined, func.count()).group_by(
                col(DeadLetterRecord.quarantined)
            )
        ).all():
            dead.add_metric(["true" if quarantined else "false"], n)
        yield dead

    def _approvals(self, s: Session) -> Iterator[Metric]:
        pending = s.exec(
            select(Approval.requested_at, Run.started_at, Run.config, Run.plant_time)
            .join(Run, col(Run.id) == col(Approval.run_id), isouter=True)
            .where(col(Approval.status) == "pending")
        ).all()
        g = GaugeMetricFamily(N + "approvals_pending", "Approvals waiting for people now.")
        g.add_metric([], len(pending))
        yield g
        wait = GaugeMetricFamily(
            N + "approval_oldest_wait_seconds",
            "Plant seconds the oldest pending approval has waited (wall seconds in live "
            "operation; a scenario's at its checkpoint resolution).",
        )
        waits = [
            # a live run's plant time is the wall clock: it has no checkpoint (stays 0)
            run_plant_time(start, config, pt) - req if start is not None else 0.0
            for req, start, config, pt in pending
        ]
        wait.add_metric([], max((max(0.0, w) for w in waits), default=0.0))
        yield wait
        decided = CounterMetricFamily(
            N + "approvals", "Approvals by final status.", labels=["status"]
        )
        for status, n in s.exec(
            select(Approval.status, func.count()).group_by(col(Approval.status))
        ).all():
            if status != "pending":
                decided.add_metric([status], n)
        yield decided

    def _model_calls(self, s: Session) -> Iterator[Metric]:
        labels = ["model_group", "deployment", "outcome"]
        calls = CounterMetricFamily(N + "model_calls", "Model calls recorded.", labels=labels)
        fallbacks = CounterMetricFamily(
            N + "model_fallbacks",
            "Model calls served after a fallback (another deployment or the playbook).",
            labels=["model_group", "deployment"],
        )
        tokens = CounterMetricFamily(
            N + "model_tokens", "Tokens of recorded model calls.", labels=["model_group", "kind"]
        )
        cost = CounterMetricFamily(
            N + "model_cost_usd", "Cost in USD of recorded model calls.", labels=["model_group"]
        )
        per_group: dict[str, list[float]] = {}
        per_outcome: dict[tuple[str, str, str], int] = {}
        per_fallback: dict[tuple[str, str], int] = {}
        for group, dep, ok, fb, n, pt, ct, usd in s.execute(
            sa_select(
                *_columns(
                    ModelCall.model_group,
                    ModelCall.deployment,
                    ModelCall.ok,
                    ModelCall.fallback,
                    func.count(),
                    func.coalesce(func.sum(ModelCall.prompt_tokens), 0),
                    func.coalesce(func.sum(ModelCall.completion_tokens), 0),
                    func.coalesce(func.sum(ModelCall.cost_usd), 0.0),
                )
            ).group_by(
                col(ModelCall.model_group),
                col(ModelCall.deployment),
                col(ModelCall.ok),
                col(ModelCall.fallback),
            )
        ).all():
            outcome = "error" if not ok else ("fallback" if fb else "ok")
            per_outcome[(group, dep, outcome)] = per_outcome.get((group, dep, outcome), 0) + n
            if fb:
                per_fallback[(group, dep)] = per_fallback.get((group, dep), 0) + n
            acc = per_group.setdefault(group, [0.0, 0.0, 0.0])
            acc[0] += pt
            acc[1] += ct
            acc[2] += usd
        for key, n in sorted(per_outcome.items()):
            calls.add_metric(list(key), n)
        for fkey, n in sorted(per_fallback.items()):
            fallbacks.add_metric(list(fkey), n)
        for group, (pt_sum, ct_sum, usd_sum) in sorted(per_group.items()):
            tokens.add_metric([group, "prompt"], pt_sum)
            tokens.add_metric([group, "completion"], ct_sum)
            cost.add_metric([group], usd_sum)
        yield calls
        yield fallbacks
        yield tokens
        yield cost


def _columns(*cols: Any) -> list[Any]:
    """Columns for a wide ``select`` (SQLAlchemy's typed overloads stop at a few)."""
    return list(cols)
