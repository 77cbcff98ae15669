"""A model answer too large for the bus: the task fails with the reason, the incident escalates.

The whole crew runs a scenario (``run_scenario``, ``memory://`` with its default
``max_message_bytes``) whose Diagnostic model, on a loopback OpenAI stub, answers with a
summary of more than 1 MiB: the Diagnosis cannot be published on any backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plantcrew.bus.base import DEFAULT_MAX_MESSAGE_BYTES
from plantcrew.llm.protocol import data_from_messages
from tests.llm.conftest import STUB_KEY, STUB_KEY_ENV
from tests.llm.crew_stub import TOKENS, crew_model
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.test_crew_models import crew_config, run

HUGE = DEFAULT_MAX_MESSAGE_BYTES + 1000


@pytest.fixture
def verbose(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    """A model that answers as the crew stub does, but diagnoses at a length of over 1 MiB."""
    monkeypatch.setenv(STUB_KEY_ENV, STUB_KEY)
    usual = crew_model()

    def answer(body: dict[str, Any]) -> Reply:
        data = data_from_messages(body["messages"])
        if data["task"] != "diagnose":
            return usual(body)
        top = max(data["candidates"], key=lambda c: c["score"])
        return Reply.json(
            {
                "root_cause": top["root_cause"],
                "confidence": round(top["score"], 3),
                "evidence": top["evidence"][:3],
                "summary": "x" * HUGE,
            },
            **TOKENS,
        )

    with OpenAIStub() as server:
        server.respond("crew-model", answer)
        yield server


def diagnose_requests(stub: OpenAIStub) -> int:
    return sum(
        1 for _, body in stub.requests if data_from_messages(body["messages"])["task"] == "diagnose"
    )


async def test_a_diagnosis_over_max_message_bytes_fails_its_task_and_the_incident_escalates(
    tmp_path: Path, verbose: OpenAIStub
) -> None:
    # before: the Diagnostic's publish raised, the bus redelivered the task (the model asked
    # again each time) until it was dead-lettered, and the incident waited for its timeout
    # ("no answer to ... within 60 s")
    with OpenAIStub() as down:  # the groups' first server fails, as in test_crew_models
        down.script("down-model", Reply.error(500))
        cfg = crew_config(tmp_path, down, verbose)
        result, _ = await run(tmp_path, cfg)
    (incident,) = result.incidents
    assert incident["outcome"] == "escalated"
    reason = incident["escalation_reason"]
    assert reason.startswith("diagnose not done after 3 attempts: diagnostic-1 failed: ")
    assert "result not sent: message of " in reason
    assert (
        f"for 'crew.events' is over the bus's max_message_bytes of {DEFAULT_MAX_MESSAGE_BYTES}"
        in reason
    )
    assert diagnose_requests(verbose) == 3  # one model call per attempt, none redelivered
