"""Root-cause ranking from an anomaly's deviations: physics rules plus memory.

``rank_root_causes(deviations, signatures, lessons)`` scores every root cause of a
:class:`SignatureBook` (``config/signatures.yaml``) against the anomaly's deviations and
returns :class:`Candidate` s, best first.

- ``rules`` signatures (the default) are physics written as soft conditions on the
  deviations (``plantcrew.detect.rules``: direction, robust z and the physical change, e.g.
  ``flow_rate down 10%`` or ``fluid_temperature up 1.0``). Score =
  ``prior * prod(require) * max(any_of) * prod(1 - weight * against) *
  (1 - support_share + support_share * mean(support))``; conditions on sensors the anomaly
  does not report are left out (a ``require`` on one scores 0: the cause cannot be shown).
- ``pattern`` signatures (kept for plant-specific books) compare a signed vector of expected
  deviations with the observed ``sign(z) * log1p(max(|z| - noise_z, 0))`` by cosine
  similarity (``either_sign``: ``|cosine|``); ``flatline`` scores a stuck sensor;
  ``single_sensor`` scores a large deviation (``|z|`` from ``drift_z`` up) carried by one
  sensor alone (a drifting sensor).
- Memory (:func:`recall`): lessons are recalled by the :func:`similarity` of their z
  signature with the anomaly's (from ``min_similarity`` up). A ``confirmed`` incident is one
  more example of its cause, worth ``closeness**2 * w / (w + 0.1)`` where ``closeness`` =
  ``(similarity - min_similarity) / (1 - min_similarity)`` and ``w`` the summed weight of
  the matching lessons: it names causes the physics cannot, and overturns a physics match
  only when it is nearly the same anomaly (one lesson at ``min_similarity`` 0.9: worth 0.91
  at similarity 1, 0.74 at 0.99, 0.23 at 0.95). A ``feedback`` lesson (a
  person's or the Reviewer's correction) is worth ``similarity * w / (w + 0.25)`` and damps
  the physics score of every other cause by ``1 - 0.6 * similarity``, so a correction
  changes later diagnoses of similar anomalies. A cause keeps the larger of its (damped)
  physics score and its memory score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from plantcrew.detect.memory import signature_of
from plantcrew.detect.rules import Scale, degree, describe
from plantcrew.detect.signatures import (
    Candidate,
    Lesson,
    Signature,
    SignatureBook,
    Term,
    default_signatures_path,
    load_signatures,
)
from plantcrew.messages import Deviation

__all__ = [
    "UNKNOWN",
    "Candidate",
    "Lesson",
    "Signature",
    "SignatureBook",
    "Term",
    "compress",
    "cosine",
    "default_signatures_path",
    "load_signatures",
    "pattern",
    "rank_root_causes",
    "recall",
    "similarity",
]

UNKNOWN = "unknown"
DAMP_FEEDBACK = 0.6


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


def similarity(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """How alike two compressed patterns are: their cosine (same sensors, same directions)
    times ``sqrt(min(|a|, |b|) / max(|a|, |b|))`` (about the same size: a flow collapse is
    not a flow dip). 1 for the same pattern, 0 when either is empty."""
    keys = set(a) | set(b)
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    if na <= 0 or nb <= 0:
        return 0.0
    return cosine(a, b, keys) * math.sqrt(min(na, nb) / max(na, nb))


def anomaly_pattern(deviations: Iterable[Deviation], noise_z: float) -> dict[str, float]:
    """The compressed pattern of an anomaly: :func:`pattern` of its
    :func:`~plantcrew.detect.memory.signature_of` (stuck sensors left out), the same
    signature a lesson of it stores."""
    return pattern(signature_of(deviations), noise_z)


def rank_root_causes(
    deviations: list[Deviation], signatures: SignatureBook, lessons: list[Lesson] | None = None
) -> list[Candidate]:
    """Rank every root cause of ``signatures`` (plus ``unknown``) for ``deviations``.

    Returns Candidates sorted by score, best first (ties by name, so the order is
    deterministic). ``unknown`` scores ``1 - best`` so it leads only when nothing fits.
    Evidence: the conditions that held (and those that told against), then the largest
    deviations in words (sensor, direction, physical change, z, value vs baseline).
    """
    observed = {d.sensor: d for d in deviations}
    u = anomaly_pattern(deviations, signatures.noise_z)
    significant = sorted(
        (d for d in deviations if d.direction == "flat" or abs(d.z) > signatures.noise_z),
        key=lambda d: (d.direction != "flat", -abs(d.z)),
    )
    facts = [describe(d) for d in significant[:4]]
    scores: dict[str, float] = {}
    evidence: dict[str, list[str]] = {}
    scale = signatures.scale  # built once per call, not once per rules signature
    for cause, sig in signatures.signatures.items():
        score, why = _physics(sig, signatures, scale, u, observed)
        scores[cause] = score
        evidence[cause] = [*why, *facts] if score > 0 else list(why)
    recall(u, lessons or [], signatures, scores, evidence)
    best = max(scores.values(), default=0.0)
    scores[UNKNOWN] = max(0.0, 1.0 - best)
    evidence[UNKNOWN] = ["no physics rule or remembered incident fits well", *facts]
    ranked = sorted(scores, key=lambda c: (-scores[c], c))
    return [
        Candidate(root_cause=c, score=round(min(max(scores[c], 0.0), 1.0), 4), evidence=evidence[c])
        for c in ranked
    ]


def _physics(
    sig: Signature,
    book: SignatureBook,
    scale: Scale,
    u: dict[str, float],
    observed: Mapping[str, Deviation],
) -> tuple[float, list[str]]:
    if sig.kind == "rules":
        return _rules(sig, scale, observed)
    if sig.kind == "flatline":
        stuck = [d.sensor for d in observed.values() if d.direction == "flat"]
        if stuck:
            return sig.prior, [f"flatline: {', '.join(stuck)} repeats one value"]
        return 0.0, []
    if sig.kind == "single_sensor":
        total = sum(v * v for v in u.values())
        if total <= 0:
            return 0.0, []
        top = max(u, key=lambda s: abs(u[s]))
        share = u[top] ** 2 / total
        size = abs(observed[top].z) / book.drift_z
        score = sig.prior * max(0.0, (share - 0.5) / 0.5) * min(size, 1.0)
        return score, [f"{top} carries {share:.0%} of the deviation alone"]
    present = [s for s in sig.sensors if s in observed]
    c = cosine(u, sig.sensors, set(present) | set(u))
    if sig.kind == "either_sign":
        c = abs(c)
    if c <= 0:
        return 0.0, []
    return sig.prior * c, [f"signature match {c:.2f} over {', '.join(sorted(present))}"]


def _rules(
    sig: Signature, scale: Scale, observed: Mapping[str, Deviation]
) -> tuple[float, list[str]]:
    why: list[str] = []

    def held(term: Term) -> float | None:
        return degree(term.condition, observed, scale)

    score = sig.prior
    for term in sig.require:
        m = held(term)
        score *= m or 0.0
        if m:
            why.append(f"{term.when} ({m:.2f})")
    if sig.any_of:
        options = [(m, t) for t in sig.any_of if (m := held(t)) is not None]
        m, t = max(options, key=lambda x: x[0], default=(0.0, None))
        score *= m
        if t is not None and m > 0:
            why.append(f"{t.when} ({m:.2f})")
    for term in sig.against:
        m = held(term)
        if m:
            score *= 1.0 - term.weight * m
            why.append(f"against: {term.when} ({m:.2f})")
    supports = [(m, t) for t in sig.support if (m := held(t)) is not None]
    if supports:
        mean = sum(m for m, _ in supports) / len(supports)
        score *= 1.0 - sig.support_share + sig.support_share * mean
        why.extend(f"also {t.when} ({m:.2f})" for m, t in supports if m > 0)
    return (score, why) if score > 0 else (0.0, [])


def recall(
    u: dict[str, float],
    lessons: list[Lesson],
    book: SignatureBook,
    scores: dict[str, float],
    evidence: dict[str, list[str]],
) -> None:
    """Fold the lessons similar to the pattern ``u`` into ``scores`` (see module)."""
    if not u or not lessons:
        return
    matched: dict[str, list[tuple[float, Lesson]]] = {}
    for lesson in lessons:
        sim = similarity(u, pattern(lesson.signature, book.noise_z))
        if sim >= book.min_similarity:
            matched.setdefault(lesson.root_cause, []).append((sim, lesson))
    memory: dict[str, float] = {}
    damping: dict[str, float] = {}
    for cause, hits in matched.items():
        fed = [(sim, les) for sim, les in hits if les.source == "feedback"]
        if fed:
            best = max(sim for sim, _ in fed)
            w = sum(les.weight for _, les in fed)
            memory[cause] = best * w / (w + 0.25)
            damping[cause] = best * DAMP_FEEDBACK
        else:
            best = max(sim for sim, _ in hits)
            w = sum(les.weight for _, les in hits)
            closeness = (best - book.min_similarity) / max(1.0 - book.min_similarity, 1e-9)
            memory[cause] = min(closeness, 1.0) ** 2 * w / (w + 0.1)
        kinds = "/".join(sorted({les.source for _, les in hits}))
        evidence.setdefault(cause, []).insert(
            0,
            f"recalls {sum(les.count for _, les in hits)} {kinds} incident(s), "
            f"best similarity {best:.2f}",
        )
    for cause in list(scores) + [c for c in memory if c not in scores]:
        damp = max((v for c, v in damping.items() if c != cause), default=0.0)
        scores[cause] = max(scores.get(cause, 0.0) * (1.0 - damp), memory.get(cause, 0.0))
