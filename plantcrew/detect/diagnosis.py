"""Root-cause ranking from an anomaly's deviations: physics signatures plus memory.

``rank_root_causes(deviations, signatures, lessons)`` scores every root cause of a
:class:`SignatureBook` (``config/signatures.yaml``) against the anomaly's deviation pattern and
returns :class:`Candidate` s, best first.

- The observed pattern is the vector of robust z-scores, compressed as
  ``sign(z) * log1p(max(|z| - noise_z, 0))`` so a sensor 200 sigma off does not drown the
  others and noise-level deviations count as none.
- A ``pattern`` signature is a signed vector of expected deviations (``-1`` = down, ``+1`` =
  up, magnitudes = relative strength); its score is the cosine similarity with the observed
  pattern over the sensors the device has, clipped at 0, times the signature's ``prior``.
  ``either_sign`` signatures (a leak or an addition) score ``|cosine|``; ``flatline`` scores
  when a sensor is stuck; ``single_sensor`` scores how much one sensor carries the pattern
  alone (a drifting sensor).
- Memory: every :class:`Lesson` (a confirmed incident's signature, or a person's or the
  Reviewer's correction) whose similarity with the observed pattern reaches
  ``min_similarity`` votes for its root cause with ``similarity * w / (w + 0.25)`` where
  ``w`` is the summed weight of the matching lessons: a remembered incident is one more
  example pattern of its cause, so it wins where it fits better than the textbook
  signatures, and loses where they fit better. A correction (``feedback``) also damps the
  physics score of every other cause by ``1 - 0.6 * similarity``, so a person's or the
  Reviewer's "it was not that" overrides physics. A cause keeps the larger of its (damped)
  physics score and its memory score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantcrew.detect.yamlio import load_yaml_model
from plantcrew.messages import Deviation

UNKNOWN = "unknown"
DAMP_FEEDBACK = 0.6


class Signature(BaseModel):
    """What one root cause looks like: expected signed deviations per sensor (see module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    kind: Literal["pattern", "either_sign", "flatline", "single_sensor"] = "pattern"
    sensors: dict[str, float] = {}
    prior: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> Signature:
        if self.kind in ("pattern", "either_sign") and not any(self.sensors.values()):
            raise ValueError(f"a {self.kind} signature needs at least one non-zero sensor weight")
        return self


class SignatureBook(BaseModel):
    """The root causes the Diagnostic may name, each with its :class:`Signature`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    noise_z: float = Field(1.0, ge=0, description="|z| up to this counts as no deviation")
    min_similarity: float = Field(0.8, gt=0, le=1, description="memory recall threshold")
    signatures: dict[str, Signature] = Field(min_length=1)


class Lesson(BaseModel):
    """A remembered incident: its root cause and deviation signature (sensor -> z).

    ``source`` is ``confirmed`` (the Reviewer confirmed the diagnosis) or ``feedback`` (a
    person or the Reviewer corrected it); ``weight`` scales its vote.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root_cause: str = Field(min_length=1)
    signature: dict[str, float] = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    source: Literal["confirmed", "feedback"] = "confirmed"


class Candidate(BaseModel):
    """One possible root cause with its score in [0, 1] and the evidence for it."""

    model_config = ConfigDict(frozen=True)

    root_cause: str
    score: float = Field(ge=0, le=1)
    evidence: list[str] = []


def load_signatures(path: Path | str) -> SignatureBook:
    """Load a SignatureBook from YAML; raises ConfigError naming the file, line and field."""
    return load_yaml_model(path, SignatureBook)


def default_signatures_path() -> Path:
    """``config/signatures.yaml`` of the settings' config folder."""
    from plantcrew.settings import get_settings

    return get_settings().config_dir / "signatures.yaml"


def compress(z: float, noise_z: float) -> float:
    """``sign(z) * log1p(max(|z| - noise_z, 0))``: the pattern weight of one deviation."""
    return math.copysign(math.log1p(max(abs(z) - noise_z, 0.0)), z)


def pattern(values: Mapping[str, float], noise_z: float) -> dict[str, float]:
    """The compressed pattern of a sensor -> z mapping."""
    return {s: compress(z, noise_z) for s, z in values.items()}


def cosine(a: Mapping[str, float], b: Mapping[str, float], sensors: Iterable[str]) -> float:
    """Cosine similarity of ``a`` and ``b`` over ``sensors`` (missing = 0); 0 if either is 0."""
    keys = list(sensors)
    dot = sum(a.get(k, 0.0) * b.get(k, 0.0) for k in keys)
    na = math.sqrt(sum(a.get(k, 0.0) ** 2 for k in keys))
    nb = math.sqrt(sum(b.get(k, 0.0) ** 2 for k in keys))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def _describe(d: Deviation) -> str:
    unit = f" {d.unit}" if d.unit else ""
    if d.direction == "flat":
        return f"{d.sensor} stuck at {d.value:g}{unit}"
    return (
        f"{d.sensor} {d.direction} {abs(d.z):.1f} sigma "
        f"({d.value:.4g} vs baseline {d.baseline:.4g}{unit})"
    )


def rank_root_causes(
    deviations: list[Deviation], signatures: SignatureBook, lessons: list[Lesson] | None = None
) -> list[Candidate]:
    """Rank every root cause of ``signatures`` (plus ``unknown``) for ``deviations``.

    Returns Candidates sorted by score, best first (ties by name, so the order is
    deterministic). ``unknown`` scores ``1 - best`` so it leads only when nothing fits.
    """
    lessons = lessons or []
    noise = signatures.noise_z
    observed = {d.sensor: d for d in deviations}
    u = pattern({s: d.z for s, d in observed.items() if d.direction != "flat"}, noise)
    stuck = [d for d in deviations if d.direction == "flat"]
    significant = sorted(
        (d for d in deviations if d.direction == "flat" or abs(d.z) > noise),
        key=lambda d: -abs(d.z),
    )
    facts = [_describe(d) for d in significant[:4]]
    scores: dict[str, float] = {}
    evidence: dict[str, list[str]] = {}
    for cause, sig in signatures.signatures.items():
        score, why = _physics(sig, u, stuck, observed)
        scores[cause] = score
        evidence[cause] = [*why, *facts] if score > 0 else list(why)
    _recall(u, lessons, signatures, scores, evidence)
    best = max(scores.values(), default=0.0)
    scores[UNKNOWN] = max(0.0, 1.0 - best)
    evidence[UNKNOWN] = ["no signature or remembered incident fits well", *facts]
    ranked = sorted(scores, key=lambda c: (-scores[c], c))
    return [
        Candidate(root_cause=c, score=round(min(max(scores[c], 0.0), 1.0), 4), evidence=evidence[c])
        for c in ranked
    ]


def _physics(
    sig: Signature, u: dict[str, float], stuck: list[Deviation], observed: Mapping[str, Deviation]
) -> tuple[float, list[str]]:
    if sig.kind == "flatline":
        if stuck:
            return sig.prior, [f"flatline: {', '.join(d.sensor for d in stuck)} repeats one value"]
        return 0.0, []
    if sig.kind == "single_sensor":
        total = sum(v * v for v in u.values())
        if total <= 0:
            return 0.0, []
        top = max(u, key=lambda s: abs(u[s]))
        share = u[top] ** 2 / total
        return sig.prior * max(0.0, (share - 0.5) / 0.5), [
            f"{top} carries {share:.0%} of the deviation alone"
        ]
    present = [s for s in sig.sensors if s in observed]
    keys = set(present) | set(u)
    c = cosine(u, sig.sensors, keys)
    if sig.kind == "either_sign":
        c = abs(c)
    if c <= 0:
        return 0.0, []
    return sig.prior * c, [f"signature match {c:.2f} over {', '.join(sorted(present))}"]


def _recall(
    u: dict[str, float],
    lessons: list[Lesson],
    book: SignatureBook,
    scores: dict[str, float],
    evidence: dict[str, list[str]],
) -> None:
    if not u or not lessons:
        return
    matched: dict[str, list[tuple[float, Lesson]]] = {}
    for lesson in lessons:
        lp = pattern(lesson.signature, book.noise_z)
        sim = cosine(u, lp, set(u) | set(lp))
        if sim >= book.min_similarity:
            matched.setdefault(lesson.root_cause, []).append((sim, lesson))
    memory: dict[str, float] = {}
    damping: dict[str, float] = {}
    for cause, hits in matched.items():
        best = max(sim for sim, _ in hits)
        w = sum(lesson.weight for _, lesson in hits)
        memory[cause] = best * w / (w + 0.25)
        kinds = "/".join(sorted({lesson.source for _, lesson in hits}))
        evidence.setdefault(cause, []).insert(
            0, f"recalls {len(hits)} {kinds} incident(s), best similarity {best:.2f}"
        )
        damping[cause] = max(
            (sim * DAMP_FEEDBACK for sim, les in hits if les.source == "feedback"), default=0.0
        )
    for cause in list(scores) + [c for c in memory if c not in scores]:
        damp = max((v for c, v in damping.items() if c != cause), default=0.0)
        scores[cause] = max(scores.get(cause, 0.0) * (1.0 - damp), memory.get(cause, 0.0))
