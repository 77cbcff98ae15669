"""Per-thread message tallies: what a scrape shows equals what was counted, from any thread."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from plantcrew.metrics import subject_label
from plantcrew.tally import MessageTally


def _tally() -> tuple[MessageTally, CollectorRegistry]:
    registry = CollectorRegistry()
    tally = MessageTally(
        "t_",
        buckets=(0.01, 1),
        label_of=subject_label,
        help_published="p",
        help_handled="h",
        help_seconds="s",
    )
    registry.register(tally)
    return tally, registry


def test_counts_from_every_thread_add_up_and_subjects_fold_into_labels() -> None:
    tally, registry = _tally()

    def work() -> None:
        for i in range(1000):
            tally.published(f"telemetry.pump{i % 7}", "telemetry.reading")
            tally.handled(f"telemetry.pump{i % 7}", "telemetry.reading", i % 10 != 0, 0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tally.handled("crew.events", "anomaly.detected", True, 0.01)  # on a bound: that bucket
    tally.handled("crew.events", "anomaly.detected", True, 5.0)
    tally.handled("crew.events", "anomaly.detected", False, -1.0)  # clock step: counted as 0
    get = registry.get_sample_value
    telemetry = {"subject": "telemetry", "type": "telemetry.reading"}
    assert get("t_messages_published_total", telemetry) == 4000
    assert get("t_messages_handled_total", {**telemetry, "outcome": "ok"}) == 3600
    assert get("t_messages_handled_total", {**telemetry, "outcome": "error"}) == 400
    assert get("t_handler_duration_seconds_count", telemetry) == 4000
    events = {"subject": "crew.events", "type": "anomaly.detected"}
    assert get("t_messages_published_total", events) is None  # never published here
    assert get("t_handler_duration_seconds_bucket", {**events, "le": "0.01"}) == 2
    assert get("t_handler_duration_seconds_bucket", {**events, "le": "1.0"}) == 2
    assert get("t_handler_duration_seconds_bucket", {**events, "le": "+Inf"}) == 3
    assert get("t_handler_duration_seconds_sum", events) == 5.01
    text = generate_latest(registry).decode()
    assert "# TYPE t_handler_duration_seconds histogram" in text and "pump" not in text
