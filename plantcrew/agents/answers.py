"""The structured answers agents ask of a model (validated; the agent adds ids and routing).

These are the JSON schemas passed as ``response_format``; the playbook model answers them
deterministically, a hosted model must match them (one repair attempt, then fallback).
"""

from __future__ import annotations

from typing import Any

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
