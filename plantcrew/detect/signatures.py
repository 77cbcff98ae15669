"""The signature book: the root causes the Diagnostic may name and what each looks like.

A :class:`SignatureBook` (``config/signatures.yaml``) holds one :class:`Signature` per root
cause: physics rules (``require``/``any_of``/``against``/``support`` :class:`Term` s, see
:mod:`plantcrew.detect.rules`) or, for plant-specific books, a signed ``pattern``; plus the
thresholds the rules use (``noise_z``, ``clear_z``, ``min_change``, ``drift_z``) and memory's
recall threshold (``min_similarity``). A :class:`Lesson` is a remembered incident; a
:class:`Candidate` one ranked root cause. How they are scored: :mod:`plantcrew.detect.diagnosis`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plantcrew.detect.rules import Amount, Condition, Scale
from plantcrew.detect.yamlio import load_yaml_model


class Term(BaseModel):
    """A condition with a weight (``against`` terms: how much a holding one takes away)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str
    weight: float = Field(1.0, ge=0, le=1)

    @field_validator("when")
    @classmethod
    def _parse(cls, v: str) -> str:
        Condition.parse(v)
        return v

    @property
    def condition(self) -> Condition:
        """The parsed condition."""
        return Condition.parse(self.when)


def _terms(v: object) -> object:
    if isinstance(v, list):
        return [{"when": x} if isinstance(x, str) else x for x in v]
    return v


class Signature(BaseModel):
    """What one root cause looks like (see module): physics rules or a signed pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    kind: Literal["rules", "pattern", "either_sign", "flatline", "single_sensor"] = "rules"
    require: list[Term] = []
    any_of: list[Term] = []
    against: list[Term] = []
    support: list[Term] = []
    support_share: float = Field(0.2, ge=0, le=1)
    sensors: dict[str, float] = {}
    prior: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _kind(cls, data: object) -> object:
        """A version-1 entry (``sensors`` and no kind, no conditions) is a pattern."""
        rules = ("require", "any_of", "against", "support")
        old = isinstance(data, dict) and "kind" not in data and "sensors" in data
        if old and isinstance(data, dict) and not any(k in data for k in rules):
            return {**data, "kind": "pattern"}
        return data

    @field_validator("require", "any_of", "against", "support", mode="before")
    @classmethod
    def _norm(cls, v: object) -> object:
        return _terms(v)

    @model_validator(mode="after")
    def _check(self) -> Signature:
        if self.kind in ("pattern", "either_sign") and not any(self.sensors.values()):
            raise ValueError(f"a {self.kind} signature needs at least one non-zero sensor weight")
        if self.kind == "rules" and not (self.require or self.any_of):
            raise ValueError("a rules signature needs at least one require or any_of condition")
        return self


class SignatureBook(BaseModel):
    """The root causes the Diagnostic may name, each with its :class:`Signature`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 2
    noise_z: float = Field(0.4, ge=0, description="|z| up to this counts as no deviation")
    clear_z: float = Field(1.0, gt=0, description="|z| from this counts as a clear deviation")
    drift_z: float = Field(4.0, gt=0, description="a single drifting sensor is this far off")
    min_change: dict[str, str | float] = Field(
        default_factory=dict,
        description="sensor pattern -> smallest meaningful change (unit, or '%' of baseline)",
    )
    min_similarity: float = Field(0.9, gt=0, le=1, description="memory recall threshold")
    signatures: dict[str, Signature] = Field(min_length=1)

    @field_validator("min_change")
    @classmethod
    def _amounts(cls, v: dict[str, str | float]) -> dict[str, str | float]:
        for text in v.values():
            Amount.parse(text)
        return v

    @model_validator(mode="after")
    def _check(self) -> SignatureBook:
        if self.clear_z <= self.noise_z:
            raise ValueError("clear_z must be larger than noise_z")
        return self

    @property
    def scale(self) -> Scale:
        """The thresholds the rules are evaluated with."""
        return Scale(
            self.noise_z,
            self.clear_z,
            {k: Amount.parse(v) for k, v in self.min_change.items()},
        )


class Lesson(BaseModel):
    """A remembered incident: its root cause and deviation signature (sensor -> z).

    ``source`` is ``confirmed`` (the Reviewer confirmed the diagnosis) or ``feedback`` (a
    person or the Reviewer corrected it); ``weight`` scales its vote; ``count`` is how many
    identical incidents it stands for (merged by the Coordinator; ``weight`` is their sum).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root_cause: str = Field(min_length=1)
    signature: dict[str, float] = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    source: Literal["confirmed", "feedback"] = "confirmed"
    count: int = Field(1, ge=1)


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
