"""Calibration of the multivariate detector from the first readings of a stream.

From an ``(n, p)`` block of calibration readings (``n`` readings of ``p`` sensors) we keep:

- a robust baseline per sensor: the median, and a scale that is ``1.4826 * MAD`` unless a
  quantised sensor makes the MAD collapse (SKAB's pressure takes four values, its flow often
  repeats 32.0), where the 5-95 % winsorised standard deviation takes over; a floor keeps a
  constant sensor from dividing by zero (Rousseeuw & Croux 1993, "Alternatives to the median
  absolute deviation");
- the covariance of the EWMA-smoothed robust z-scores, estimated with the Minimum Covariance
  Determinant (scikit-learn's ``MinCovDet``, FAST-MCD of Rousseeuw & Van Driessen 1999), so a
  fault that already shows in the calibration window does not inflate the normal spread;
- the alarm threshold on the squared Mahalanobis distance: a high quantile of the calibration
  distances times a safety factor, never below the chi-square quantile for ``p`` degrees of
  freedom (the distribution of the distance under Gaussian, independent readings);
- the longest run of identical values per sensor (for the stuck-sensor test).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2
from sklearn.covariance import MinCovDet

from plantcrew.detect.config import MonitorConfig
from plantcrew.errors import PlantcrewError

FloatArray = NDArray[np.float64]
MAD_TO_SIGMA = 1.4826


class CalibrationError(PlantcrewError):
    """The calibration readings cannot define a baseline (too few, or not finite)."""


@dataclass(frozen=True)
class Calibration:
    """What the detector learned from the calibration readings (``p`` scored sensors).

    ``median``/``scale`` shape ``(p,)`` in sensor units; ``precision`` ``(p, p)`` is the
    inverse covariance of the smoothed z-scores; ``threshold`` bounds their squared
    Mahalanobis distance; ``max_run`` is the longest run of identical values per sensor.
    """

    sensors: tuple[str, ...]
    median: FloatArray
    scale: FloatArray
    precision: FloatArray
    threshold: float
    max_run: NDArray[np.int64]
    constant: NDArray[np.bool_]


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


def ewma(z: FloatArray, ts: FloatArray, tau_s: float) -> FloatArray:
    """EWMA of rows of ``z`` ``(n, p)`` at times ``ts`` ``(n,)`` with time constant ``tau_s``.

    The weight of each new row is ``1 - exp(-dt / tau_s)`` so irregular sampling is handled.
    The first row initialises the average.
    """
    out = np.empty_like(z)
    acc = z[0].copy()
    out[0] = acc
    for i in range(1, len(z)):
        dt = max(float(ts[i] - ts[i - 1]), 0.0)
        a = 1.0 - np.exp(-dt / tau_s) if dt > 0 else 0.0
        acc += a * (z[i] - acc)
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


def band_filter(
    x: FloatArray,
    ts: FloatArray,
    median: FloatArray,
    scale: FloatArray,
    fast_tau_s: float,
    base_tau_s: FloatArray,
) -> FloatArray:
    """The detector's feature series over ``x`` ``(n, p)``, as the monitor computes it live.

    Per sensor: ``z = (x - b) / scale`` with a baseline ``b`` that starts at ``median`` and
    follows ``x`` with time constant ``base_tau_s`` (``inf`` = fixed), smoothed by an EWMA with
    ``fast_tau_s``. Returns the smoothed z ``(n, p)``.
    """
    out = np.empty_like(x)
    base = median.astype(np.float64).copy()
    acc = np.zeros(x.shape[1])
    for i in range(len(x)):
        dt = max(float(ts[i] - ts[i - 1]), 0.0) if i else 0.0
        z = (x[i] - base) / scale
        if i == 0:
            acc = z.copy()
        elif dt > 0:
            acc += (1.0 - np.exp(-dt / fast_tau_s)) * (z - acc)
            base += (1.0 - np.exp(-dt / base_tau_s)) * (x[i] - base)
        out[i] = acc
    return out


def base_taus(sensors: tuple[str, ...], config: MonitorConfig) -> FloatArray:
    """Per-sensor baseline time constant: thermal sensors track, the others drift slowly."""
    slow = config.baseline_tau_s if config.baseline_tau_s > 0 else np.inf
    return np.array(
        [
            config.thermal_tau_s
            if any(fnmatch.fnmatch(s, pat) for pat in config.thermal_sensors)
            else slow
            for s in sensors
        ],
        dtype=np.float64,
    )


def calibrate(
    sensors: tuple[str, ...], ts: FloatArray, x: FloatArray, config: MonitorConfig
) -> Calibration:
    """Learn a :class:`Calibration` from readings ``x`` ``(n, p)`` taken at ``ts`` ``(n,)``.

    Raises CalibrationError when ``n`` is too small or a value is not finite.
    """
    n, p = x.shape
    if n < 10 or p == 0:
        raise CalibrationError(f"need at least 10 readings of 1+ sensors, got {n}x{p}")
    if not np.all(np.isfinite(x)):
        raise CalibrationError("calibration readings must be finite")
    median = np.median(x, axis=0)
    scale = robust_scale(x)
    constant = np.asarray(np.ptp(x, axis=0) == 0)
    taus = base_taus(sensors, config)
    smooth = band_filter(x, ts, median, scale, config.fast_tau_s, taus)
    raw = band_filter(x, ts, median, scale, 1e-9, taus)
    burn = min(n // 4, int(np.searchsorted(ts - ts[0], 3 * config.fast_tau_s)))
    sample = smooth[burn:]
    cov = smoothed_cov(raw[burn:], sample, ts, constant, config)
    precision = np.asarray(np.linalg.pinv(cov, hermitian=True), dtype=np.float64)
    d2 = np.einsum("ij,jk,ik->i", sample, precision, sample)
    empirical = float(np.quantile(d2, config.threshold_quantile)) * config.threshold_factor
    bound = float(chi2.ppf(1.0 - config.chi2_floor_alpha, df=max(int((~constant).sum()), 1)))
    return Calibration(
        sensors=sensors,
        median=median,
        scale=scale,
        precision=precision,
        threshold=max(empirical, bound),
        max_run=longest_runs(x),
        constant=constant,
    )


def smoothed_cov(
    raw: FloatArray,
    smooth: FloatArray,
    ts: FloatArray,
    constant: NDArray[np.bool_],
    config: MonitorConfig,
) -> FloatArray:
    """Covariance ``(p, p)`` of the smoothed z-scores, estimated so that it does not shrink.

    The correlation comes from the unsmoothed z-scores (``n`` nearly independent rows, robust
    via MCD), the per-sensor spread from the smoothed ones, but never below what an EWMA
    leaves of white noise (``sqrt(a / (2 - a))`` times the raw spread, ``a`` the EWMA weight
    per reading): smoothing makes neighbouring rows alike, so a covariance fitted on smoothed
    rows alone sees only a few independent samples and comes out too tight.
    """
    p = raw.shape[1]
    cov = np.eye(p)
    live = np.flatnonzero(~constant)
    if live.size == 0:
        return cov
    raw_cov = _robust_cov(raw[:, live], config.random_state)
    raw_sd = np.sqrt(np.maximum(np.diag(raw_cov), 1e-12))
    corr = raw_cov / np.outer(raw_sd, raw_sd)
    steps = np.diff(ts)
    dt = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 1.0
    a = 1.0 - np.exp(-dt / config.fast_tau_s)
    white = np.sqrt(a / (2.0 - a)) * raw_sd
    sd = np.maximum(np.std(smooth[:, live], axis=0), white)
    live_cov = corr * np.outer(sd, sd)
    ridge = 1e-3 * max(float(np.trace(live_cov)) / live.size, 1e-12)
    cov[np.ix_(live, live)] = live_cov + ridge * np.eye(live.size)
    return cov


def _robust_cov(sample: FloatArray, seed: int) -> FloatArray:
    """MCD covariance of ``sample`` (about zero); the plain one if MCD cannot be fitted."""
    try:
        mcd = MinCovDet(assume_centered=True, random_state=seed).fit(sample)
        return np.asarray(mcd.covariance_, dtype=np.float64)
    except (ValueError, np.linalg.LinAlgError):
        return np.atleast_2d(np.asarray(sample.T @ sample / len(sample), dtype=np.float64))
