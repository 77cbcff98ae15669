"""The structured answers agents ask of a model (validated; the agent adds ids and routing).

These are the JSON schemas passed as ``response_format``; the playbook model answers them
deterministically, a hosted model must match them (one repair attempt, then fallback).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DiagnosisAnswer(BaseModel):
    """Root cause (from the candidates' vocabulary, or ``unknown``) with confidence in [0, 1]."""

    model_config = ConfigDict(extra="ignore")
    root_cause: str
    confidence: float = Field(ge=0, le=1)
    evidence: list[str] = []
    summary: str = ""


class ProposalAnswer(BaseModel):
    """One action: an actuator command on a device, or ``notify`` for a person."""

    model_config = ConfigDict(extra="ignore")
    device_id: str
    command: str
    parameters: dict[str, Any] = {}
    hazard_class: int = Field(0, ge=0, le=3)
    rationale: str = ""


class ReviewAnswer(BaseModel):
    """The Reviewer's account of an incident and lessons worth keeping."""

    model_config = ConfigDict(extra="ignore")
    summary: str
    root_cause_confirmed: bool = True
    lessons: list[str] = []


class SafetyReviewAnswer(BaseModel):
    """A model's written review of the Safety Officer's rule-based decision (advice only).

    ``recommended_verdict`` is what the model would decide; the Safety Officer follows it only
    when it is stricter than the rules' verdict (``plantcrew.agents.safety_review``).
    """

    model_config = ConfigDict(extra="ignore")
    review: str = Field(max_length=4000)
    concerns: list[str] = []
    recommended_verdict: Literal["approved", "rejected", "needs_human"]
