"""SKAB's outlier metrics (pooled confusion) and detection delay."""

from __future__ import annotations

import pytest

from plantcrew.detect import Confusion, confusion, detection_delay, pooled, raised_at


def test_confusion_counts_only_test_rows():
    truth = [1, 1, 0, 0, 1, 1, 0, 0]
    pred = [1, 0, 1, 0, 1, 0, 1, 0]
    assert confusion(truth, pred) == Confusion(tp=2, fp=2, tn=2, fn=2)
    assert confusion(truth, pred, start=4) == Confusion(tp=1, fp=1, tn=1, fn=1)
    with pytest.raises(ValueError):
        confusion([0, 1], [0])


def test_skab_formulas():
    c = Confusion(tp=30, fp=10, tn=90, fn=20)
    assert c.f1 == pytest.approx(30 / (30 + (20 + 10) / 2))
    assert c.far == pytest.approx(10.0)
    assert c.mar == pytest.approx(40.0)
    assert Confusion().f1 == 0.0 and Confusion().far == 0.0


def test_pooling_differs_from_averaging():
    a, b = Confusion(tp=90, fp=0, tn=10, fn=10), Confusion(tp=0, fp=50, tn=50, fn=10)
    total = pooled([a, b])
    assert total == Confusion(tp=90, fp=50, tn=60, fn=20)
    assert total.f1 != pytest.approx((a.f1 + b.f1) / 2)


def test_detection_delay():
    assert detection_delay(100.0, [50.0, 112.0, 130.0]) == 12.0
    assert detection_delay(100.0, [50.0]) is None
    assert detection_delay(None, [10.0]) is None
    assert detection_delay(100.0, [400.0], horizon_s=60) is None


def test_raised_at_gives_rising_edges_only():
    """A flag already up at a changepoint has risen before it: it is not a detection there."""
    flags, ts = [1, 1, 0, 0, 1, 1, 0, 1], [10.0 * i for i in range(8)]
    assert raised_at(flags, ts) == [0.0, 40.0, 70.0]
    assert detection_delay(10.0, raised_at(flags, ts)) == 30.0
