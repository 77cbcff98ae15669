"""Scores of a detector against labels: SKAB's outlier-detection metrics and detection delay.

SKAB's leaderboard (github.com/waico/SKAB, evaluation from github.com/waico/tsad,
``evaluating(..., metric='binary')``) sums one confusion matrix over all files and reports

- F1  = TP / (TP + (FN + FP) / 2)
- FAR = FP / (FP + TN) * 100   (false alarm rate, %)
- MAR = FN / (FN + TP) * 100   (missed alarm rate, %)

SKAB's notebooks fit on rows 0-399 of each file but count every row of every labelled file
(``anomaly-free.csv`` is left out); plantcrew reports that (the leaderboard figure) and the
same over the test rows alone (rows 400 onward), which the calibration rows cannot flatter.
Where a formula divides by zero SKAB gets NaN; :func:`skab_rates` gives None there.
SKAB rounds to two decimals for its table; we keep full precision and round when showing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Confusion:
    """Counts of a binary labelling: true/false positives/negatives."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    @property
    def f1(self) -> float:
        """SKAB's F1, TP / (TP + (FN + FP) / 2); 0 when there is nothing to count."""
        denom = self.tp + (self.fn + self.fp) / 2
        return self.tp / denom if denom else 0.0

    @property
    def far(self) -> float:
        """False alarm rate in %, FP / (FP + TN) * 100; 0 with no negatives."""
        n = self.fp + self.tn
        return 100.0 * self.fp / n if n else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate in %, FN / (FN + TP) * 100; 0 with no positives."""
        n = self.fn + self.tp
        return 100.0 * self.fn / n if n else 0.0


def skab_rates(c: Confusion) -> dict[str, float | None]:
    """``{"f1", "far_pct", "mar_pct"}`` of ``c``; None where SKAB's formula divides by zero
    (its code gives NaN): F1 with no TP, FP or FN, FAR with no negative rows, MAR with no
    positive rows (a file with no anomaly has no missed alarm rate, rather than 0 %)."""
    return {
        "f1": c.f1 if c.tp + c.fp + c.fn else None,
        "far_pct": c.far if c.fp + c.tn else None,
        "mar_pct": c.mar if c.fn + c.tp else None,
    }


def confusion(truth: Sequence[int], predicted: Sequence[int], start: int = 0) -> Confusion:
    """Confusion of 0/1 ``predicted`` against 0/1 ``truth`` over rows ``start`` onward.

    Raises ValueError when the two sequences differ in length.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} rows, predictions {len(predicted)}")
    tp = fp = tn = fn = 0
    for t, p in zip(truth[start:], predicted[start:], strict=True):
        if t and p:
            tp += 1
        elif p:
            fp += 1
        elif t:
            fn += 1
        else:
            tn += 1
    return Confusion(tp, fp, tn, fn)


def pooled(parts: Iterable[Confusion]) -> Confusion:
    """Sum of confusions (SKAB pools all files before computing F1, FAR and MAR)."""
    total = Confusion()
    for c in parts:
        total = total + c
    return total


def detection_delay(
    changepoint_ts: float | None, detections_ts: Iterable[float], *, horizon_s: float | None = None
) -> float | None:
    """Seconds from the first changepoint to the first detection at or after it.

    ``None`` when there is no changepoint or no detection in ``[cp, cp + horizon_s]``.
    A detection before the changepoint is a false alarm, not an early detection.
    """
    if changepoint_ts is None:
        return None
    for t in sorted(detections_ts):
        if t >= changepoint_ts and (horizon_s is None or t - changepoint_ts <= horizon_s):
            return t - changepoint_ts
    return None


def raised_at(flags: Sequence[int], ts: Sequence[float]) -> list[float]:
    """Times ``ts[i]`` at which the 0/1 ``flags`` rise (``flags[i]`` set, ``flags[i - 1]``
    not, or ``i == 0``); both sequences are in row order. Raises ValueError on a length
    mismatch."""
    if len(flags) != len(ts):
        raise ValueError(f"{len(flags)} flags but {len(ts)} times")
    return [
        t for i, (f, t) in enumerate(zip(flags, ts, strict=True)) if f and not (i and flags[i - 1])
    ]
