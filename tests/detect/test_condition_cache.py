"""A rule's condition is parsed once, however many anomalies the diagnosis ranks; a bad one
is refused every time."""

from __future__ import annotations

import pytest

from plantcrew.detect import load_signatures, rank_root_causes
from plantcrew.detect.rules import Amount, Condition
from plantcrew.messages import Deviation
from plantcrew.settings import DEFAULT_CONFIG_DIR

DEVIATIONS = [
    Deviation(sensor="flow_rate", value=21.0, baseline=32.0, z=-9.0, direction="down"),
    Deviation(sensor="pressure", value=2.1, baseline=2.6, z=-4.5, direction="down"),
]


def test_a_condition_text_is_parsed_once() -> None:
    first = Condition.parse("flow_rate down 10% z>=3")
    assert Condition.parse("flow_rate down 10% z>=3") is first
    assert (first.sensor, first.direction, first.amount, first.z) == (
        "flow_rate", "down", Amount(0.1, True), 3.0,
    )  # fmt: skip


def test_a_bad_condition_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="bad condition"):
            Condition.parse("flow_rate sideways")


def test_ranking_twice_gives_the_same_candidates() -> None:
    book = load_signatures(DEFAULT_CONFIG_DIR / "signatures.yaml")
    first = rank_root_causes(DEVIATIONS, book)
    assert rank_root_causes(DEVIATIONS, book) == first
    assert first[0].root_cause != "unknown" and first[0].evidence
