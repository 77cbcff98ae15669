"""Output types and data blocks the tests ask the models for (shaped like the agents' ones)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DiagnosisOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root_cause: str
    confidence: float = Field(ge=0, le=1)
    evidence: list[str]
    summary: str


class ActionOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str
    command: str
    parameters: dict[str, Any]
    hazard_class: int = Field(ge=0, le=3)
    rationale: str


class ReviewOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str
    root_cause_confirmed: bool
    lessons: list[str]


DIAGNOSE = {
    "task": "diagnose",
    "candidates": [
        {
            "root_cause": "cavitation",
            "score": 0.82,
            "evidence": ["flow down 18%", "vibration up 3.1 sigma"],
        },
        {"root_cause": "rotor_imbalance", "score": 0.31, "evidence": ["vibration up"]},
    ],
}
PROPOSE = {
    "task": "propose_action",
    "root_cause": "cavitation",
    "device_id": "pump1",
    "state": {"pump1": {"speed_pct": 90, "flow_lpm": 20.5}, "inlet_valve": {"position_pct": 15}},
}
REVIEW = {  # the shape of the Coordinator's review facts
    "task": "review",
    "incident_id": "inc-1",
    "device_id": "pump1",
    "root_cause": "cavitation",
    "confidence": 0.82,
    "outcome": "resolved",
    "escalation_reason": None,
    "detected_at": 10.0,
    "resolved_at": 42.5,
    "deviations": [{"sensor": "flow_lpm", "z": -6.1}],
    "actions": [
        {
            "device_id": "pump1",
            "command": "set_speed",
            "parameters": {"speed_pct": 70},
            "status": "executed",
        }
    ],
}


def user_message(data: dict[str, Any], text: str = "Do the task.") -> dict[str, Any]:
    from plantcrew.llm.protocol import render_data_block

    return {"role": "user", "content": f"{text}\n\n{render_data_block(data)}"}
