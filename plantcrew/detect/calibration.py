"""Calibration of the multivariate detector from the first readings of a stream.

From an ``(n, p)`` block of calibration readings (``n`` readings of ``p`` sensors) we keep:

- a robust baseline per sensor: the median, and a scale that is ``1.4826 * MAD`` unless a
  quantised sensor makes the MAD collapse (SKAB's pressure takes four values, its flow often
  repeats 32.0), where the 5-95 % winsorised standard deviation takes over; a floor keeps a
  constant sensor from dividing by zero (Rousseeuw & Croux 1993, "Alternatives to the median
  absolute deviation"). A thermal sensor's baseline follows it (``thermal_tau_s``), so its
  scale is that of its residual about the moving baseline;
- the modelled spread of each EWMA-smoothed z-score: the larger of what calibration showed,
  what an EWMA leaves of white noise, and ``min_spread``;
- the correlation of the unsmoothed z-scores, estimated with the Minimum Covariance
  Determinant (scikit-learn's ``MinCovDet``, FAST-MCD of Rousseeuw & Van Driessen 1999) so a
  disturbance inside calibration does not distort it, and shrunk towards the identity;
- the alarm levels, for any subset of the sensors, of the squared Mahalanobis distance and of
  one sensor's squared strength (see :meth:`Calibration.subspace`);
- the stuck-sensor limit per sensor: how many identical raw readings in a row are beyond
  what calibration makes plausible (see :func:`stuck_limits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2
from sklearn.covariance import MinCovDet

from plantcrew.detect.config import MonitorConfig
from plantcrew.errors import PlantcrewError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
MAD_TO_SIGMA = 1.4826
RAW_LIMIT = 1e100
"""Readings are clamped to +-this before any arithmetic: a finite but absurd value (a
historian's bad-value sentinel such as float max) stays absurd without overflowing sums."""
Z_LIMIT = 1e6
"""z-scores (noise sd) are clipped to +-this: a reading that far off is as anomalous as the
detector can tell, and squares and sums of z stay finite (the score stays in [0, 1])."""


class CalibrationError(PlantcrewError):
    """The calibration readings cannot define a baseline (too few, or not finite)."""


@dataclass(frozen=True)
class Subspace:
    """The scoring model restricted to some sensors (``index``).

    ``precision`` is the inverse covariance of their smoothed z-scores and ``threshold`` the
    alarm level of the squared Mahalanobis distance; ``single`` the alarm level of one
    sensor's squared strength ``(z / spread) ** 2`` (Bonferroni over the sensors).
    """

    index: NDArray[np.intp]
    precision: FloatArray
    threshold: float
    single: float

    def excess(self, smoothed: FloatArray, spread: FloatArray) -> float:
        """How far the smoothed z-scores ``(p,)`` lie beyond the alarm level (1.0 = at it).

        The larger of the Mahalanobis distance over its threshold (a shift shared by several
        sensors) and the largest single-sensor strength over its own threshold (a shift of
        one sensor, which the distance dilutes among the others).
        """
        if self.index.size == 0:
            return 0.0
        s = smoothed[self.index]
        d2 = float(s @ self.precision @ s)
        one = float(np.max((s / spread[self.index]) ** 2))
        return max(d2 / self.threshold, one / self.single)


@dataclass(frozen=True)
class Calibration:
    """What the detector learned from the calibration readings (``p`` scored sensors).

    ``baseline`` ``(p,)`` is each sensor's level at rated speed as it stood at the end of
    calibration, ``scale`` ``(p,)`` its noise in its own units; ``spread`` ``(p,)`` is the
    modelled sd of each smoothed z-score and ``corr`` ``(p, p)`` their correlation;
    ``sample`` ``(m, p)`` the smoothed calibration z-scores after burn-in (for empirical
    thresholds); ``stuck_limit`` how many identical raw values in a row mean a stuck sensor;
    ``thermal``/``constant`` flag sensors.
    """

    sensors: tuple[str, ...]
    baseline: FloatArray
    scale: FloatArray
    spread: FloatArray
    corr: FloatArray
    sample: FloatArray
    stuck_limit: NDArray[np.int64]
    thermal: BoolArray
    constant: BoolArray
    alpha: float
    threshold_quantile: float
    threshold_factor: float
    _subspaces: dict[bytes, Subspace] = field(default_factory=dict, compare=False, repr=False)

    @property
    def univariate(self) -> float:
        """The strength (``|smoothed z| / spread``) at which one sensor alone alarms."""
        return float(np.sqrt(self.subspace(~self.constant).single))

    def subspace(self, mask: BoolArray) -> Subspace:
        """The :class:`Subspace` of the sensors where ``mask`` is True (cached).

        The distance threshold is the chi-square ``1 - alpha`` quantile for the number ``k``
        of live (non-constant) sensors in the mask, the single-sensor one the chi-square
        (1 degree of freedom) ``1 - alpha / k`` quantile; neither is below
        ``threshold_factor`` times the ``threshold_quantile`` of the same statistic over the
        calibration readings.
        """
        key = np.packbits(mask).tobytes() + bytes([len(mask) % 256])
        hit = self._subspaces.get(key)
        if hit is not None:
            return hit
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            sub = Subspace(idx, np.zeros((0, 0)), 1.0, 1.0)
        else:
            sd = self.spread[idx]
            cov = self.corr[np.ix_(idx, idx)] * np.outer(sd, sd)
            precision = np.asarray(np.linalg.pinv(cov, hermitian=True), dtype=np.float64)
            s = self.sample[:, idx]
            d2 = np.einsum("ij,jk,ik->i", s, precision, s)
            q, k = self.threshold_quantile, self.threshold_factor
            df = max(int((~self.constant[idx]).sum()), 1)
            bound = float(chi2.ppf(1.0 - self.alpha, df=df))
            one = np.max((s / sd) ** 2, axis=1)
            single = float(chi2.ppf(1.0 - self.alpha / df, df=1))
            sub = Subspace(
                idx,
                precision,
                max(bound, k * float(np.quantile(d2, q))),
                max(single, k * float(np.quantile(one, q))),
            )
        self._subspaces[key] = sub
        return sub


def robust_scale(x: FloatArray) -> FloatArray:
    """Per-column robust sigma of ``x`` ``(n, p)``.

    ``max(1.4826 * MAD, winsorised std)``: the MAD for well-behaved sensors; the standard
    deviation of the values clipped to their 5th-95th percentiles when the sensor is so
    quantised that most readings repeat one value and the MAD collapses to (nearly) zero.
    A constant sensor gets a floor of ``1e-6 * |median|`` (at least 1e-9).
    """
    med = np.median(x, axis=0)
    mad = MAD_TO_SIGMA * np.median(np.abs(x - med), axis=0)
    lo, hi = np.percentile(x, [5, 95], axis=0)
    wstd = np.std(np.clip(x, lo, hi), axis=0)
    floor = np.maximum(1e-6 * np.abs(med), 1e-9)
    return np.asarray(np.maximum(np.maximum(mad, wstd), floor), dtype=np.float64)


def ewma_weight(dt: float, tau_s: float) -> float:
    """Weight of a new value in an EWMA with time constant ``tau_s`` after ``dt`` seconds."""
    if dt <= 0:
        return 0.0
    if not np.isfinite(tau_s):
        return 0.0
    return float(-np.expm1(-dt / tau_s))


def track(x: FloatArray, ts: FloatArray, tau_s: float) -> FloatArray:
    """A baseline that follows ``x`` ``(n, p)`` with time constant ``tau_s``, from ``x[0]``.

    Row ``i`` is the baseline *before* reading ``i`` updates it (what that reading is
    compared with); the first row is ``x[0]``.
    """
    out = np.empty_like(x)
    b = x[0].astype(np.float64).copy()
    for i in range(len(x)):
        out[i] = b
        dt = float(ts[i] - ts[i - 1]) if i else 0.0
        b += ewma_weight(dt, tau_s) * (x[i] - b)
    return out


def smooth(z: FloatArray, ts: FloatArray, tau_s: float) -> FloatArray:
    """EWMA of the rows of ``z`` ``(n, p)`` at times ``ts`` (irregular sampling allowed)."""
    out = np.empty_like(z)
    acc = z[0].copy()
    for i in range(len(z)):
        if i:
            acc += ewma_weight(float(ts[i] - ts[i - 1]), tau_s) * (z[i] - acc)
        out[i] = acc
    return out


def longest_runs(x: FloatArray) -> NDArray[np.int64]:
    """Longest run of exactly repeated values in each column of ``x`` ``(n, p)``."""
    runs = np.ones(x.shape[1], dtype=np.int64)
    cur = np.ones(x.shape[1], dtype=np.int64)
    for i in range(1, len(x)):
        same = x[i] == x[i - 1]
        cur = np.where(same, cur + 1, 1)
        runs = np.maximum(runs, cur)
    return runs


def stuck_limits(raw: FloatArray, config: MonitorConfig) -> NDArray[np.int64]:
    """Per sensor, the run of identical raw readings ``(n, p)`` that means a stuck sensor.

    With ``q`` the share of calibration readings that repeat the previous one exactly
    (Laplace-smoothed: ``(repeats + 1) / n``), a run of ``k`` identical readings has chance
    about ``q ** (k - 1)``; the limit is the ``k`` that brings this under ``stuck_alpha``,
    at least ``stuck_min_readings`` and three times the longest run calibration showed
    (quantised sensors repeat in bursts, not independently). A continuous noisy sensor is
    stuck after a handful of repeats; SKAB's flow, which sits on 32.0 for long stretches,
    only after many.
    """
    n = len(raw)
    repeats = (raw[1:] == raw[:-1]).sum(axis=0) if n > 1 else np.zeros(raw.shape[1])
    q = np.clip((repeats + 1.0) / max(n, 2), 1e-12, 1.0 - 1e-12)
    k = np.ceil(1.0 + np.log(config.stuck_alpha) / np.log(q))
    limit = np.maximum(np.maximum(k, 3 * longest_runs(raw)), config.stuck_min_readings)
    return np.asarray(limit, dtype=np.int64)


def calibrate(
    sensors: tuple[str, ...],
    ts: FloatArray,
    x: FloatArray,
    config: MonitorConfig,
    *,
    thermal: BoolArray,
    gain: FloatArray | None = None,
) -> Calibration:
    """Learn a :class:`Calibration` from readings ``x`` ``(n, p)`` taken at ``ts`` ``(n,)``.

    ``thermal`` ``(p,)`` flags the thermal sensors. ``gain`` ``(n, p)`` is what each reading
    is expected to be relative to its rated-speed value (the affinity factor ``n ** k``;
    default 1): the baseline is kept at rated speed and the scale in the sensor's own units.
    Raises CalibrationError when ``n`` is too small or a value is not finite.
    """
    n, p = x.shape
    if n < 10 or p == 0:
        raise CalibrationError(f"need at least 10 readings of 1+ sensors, got {n}x{p}")
    g = np.ones_like(x) if gain is None else gain
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(g)) and np.all(g > 0)):
        raise CalibrationError("calibration readings must be finite")
    rated = x / g
    level = np.median(rated, axis=0)
    base = np.tile(level, (n, 1))
    moving = track(rated, ts, config.thermal_tau_s)
    base[:, thermal] = moving[:, thermal]
    with np.errstate(over="ignore"):
        resid = x - base * g
        scale = robust_scale(resid + level)
        z = np.clip(resid / scale, -Z_LIMIT, Z_LIMIT)
    warmup = 3 * max(config.fast_tau_s, config.thermal_tau_s)
    burn = min(n // 4, int(np.searchsorted(ts - ts[0], warmup)))
    sm = smooth(z, ts, config.fast_tau_s)[burn:]
    constant = np.asarray(np.ptp(x, axis=0) == 0)
    steps = np.diff(ts)
    dt = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 1.0
    a = ewma_weight(dt, config.fast_tau_s)
    white = np.sqrt(a / (2.0 - a)) * np.std(z[burn:], axis=0)
    spread = np.maximum(np.maximum(np.std(sm, axis=0), white), config.min_spread)
    wander = config.thermal_drift_per_s * config.thermal_tau_s / scale
    spread = np.where(thermal, np.maximum(spread, wander), spread)
    spread = np.where(constant, 1.0, spread)
    last_w = ewma_weight(float(ts[-1] - ts[-2]) if n > 1 else 0.0, config.thermal_tau_s)
    baseline = np.where(thermal, moving[-1] + last_w * (rated[-1] - moving[-1]), level)
    return Calibration(
        sensors=sensors,
        baseline=np.asarray(baseline, dtype=np.float64),
        scale=scale,
        spread=np.asarray(spread, dtype=np.float64),
        corr=_correlation(z[burn:], constant, config),
        sample=np.asarray(sm, dtype=np.float64),
        stuck_limit=stuck_limits(x, config),
        thermal=np.asarray(thermal, dtype=bool),
        constant=constant,
        alpha=config.alpha,
        threshold_quantile=config.threshold_quantile,
        threshold_factor=config.threshold_factor,
    )


def _correlation(z: FloatArray, constant: BoolArray, config: MonitorConfig) -> FloatArray:
    """Robust correlation ``(p, p)`` of the z-scores, shrunk towards the identity."""
    p = z.shape[1]
    corr = np.eye(p)
    live = np.flatnonzero(~constant)
    if live.size < 2:
        return corr
    cov = _robust_cov(z[:, live], config.random_state)
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    r = cov / np.outer(sd, sd)
    lam = config.correlation_shrinkage
    corr[np.ix_(live, live)] = (1.0 - lam) * r + lam * np.eye(live.size)
    return corr


def _robust_cov(sample: FloatArray, seed: int) -> FloatArray:
    """MCD covariance of ``sample`` (about zero); the plain one if MCD cannot be fitted."""
    try:
        mcd = MinCovDet(assume_centered=True, random_state=seed).fit(sample)
        return np.asarray(mcd.covariance_, dtype=np.float64)
    except (ValueError, np.linalg.LinAlgError):
        return np.atleast_2d(np.asarray(sample.T @ sample / len(sample), dtype=np.float64))
