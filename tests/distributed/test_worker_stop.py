"""A worker told to stop (SIGTERM) while a task is in flight takes no new task in its grace:
its agents with nothing in flight stop fetching at once, and a task that still reaches it
(an agent whose own task just finished fetches the next) is handed back at once. Before, such
a task waited at the closed gate until the grace ended or its ack wait expired (then it was
redelivered, maybe to the same stopping worker, each time counted an attempt), while live
workers of the role sat idle.

A real ``plantcrew worker --role reviewer --concurrency 2`` on the machine's broker and
PostgreSQL; its model is a loopback OpenAI server that holds the first call until the test
lets it go (``tests/llm/openai_stub.py``), so the first task stays in flight as long as needed.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from plantcrew.bus import connect
from plantcrew.messages import Capability, DeadLetter, IncidentReview, Message, Subjects, Task
from tests.conftest import bus_url_for
from tests.distributed.conftest import FAULT_BROKERS, crew_of, new_schema
from tests.llm.openai_stub import OpenAIStub, Reply

STUB = "held-review"
KEY_ENV = "PLANTCREW_TEST_STUB_KEY"


ACK_WAIT_S = 180  # longer than the test waits: a task redelivered by its ack wait fails it


def held_model_config(base: Path, dest: Path, api_base: str) -> Path:
    """``base`` (the test config) with an ack wait of :data:`ACK_WAIT_S` and the review group
    served first by the stub at ``api_base`` (no retries), then by its playbook."""
    shutil.copytree(base, dest)
    crew = yaml.safe_load((dest / "crew.yaml").read_text())
    crew["delivery"]["ack_wait_s"] = ACK_WAIT_S
    (dest / "crew.yaml").write_text(yaml.safe_dump(crew))
    models = yaml.safe_load((dest / "models.yaml").read_text())
    playbook = [d for d in models["groups"]["review"]["deployments"] if "playbook" in d["model"]]
    stub = {"model": f"openai/{STUB}", "name": "review-held", "api_base": api_base,
            "api_key_env": KEY_ENV, "timeout_s": 120, "max_retries": 0}  # fmt: skip
    models["groups"]["review"]["deployments"] = [stub, *playbook]
    (dest / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    return dest


def review_task(task_id: str) -> Message:
    task = Task(task_id=task_id, incident_id=f"inc-{task_id}", capability=Capability.REVIEW)
    return Message.new(task, source="test", subject=Subjects.tasks(Capability.REVIEW))


async def until(what: str, check: Any, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("broker", FAULT_BROKERS)
async def test_a_stopping_worker_hands_a_new_task_back_at_once_and_finishes_its_own(
    broker: str,
    crew_config: Path,
    pg_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "dummy")
    release, asked = threading.Event(), threading.Event()

    def held(body: dict[str, Any]) -> Reply:  # the first call waits; the playbook answers
        if not asked.is_set():
            asked.set()
            release.wait(120)
        return Reply.error(500)

    bus_url = bus_url_for(broker)
    with OpenAIStub() as stub:
        stub.respond(STUB, held)
        cfg = held_model_config(crew_config, tmp_path / "config", stub.base_url)
        worker = ("worker", "--role", "reviewer", "--concurrency", "2", "--grace", "90")
        bus = await connect(bus_url)
        answered: dict[str, str] = {}
        dead: dict[str, str] = {}

        async def on_event(msg: Message) -> None:
            if isinstance(msg.payload, IncidentReview):
                answered[msg.payload.task_id] = msg.source

        async def on_dead(msg: Message) -> None:
            if isinstance(msg.payload, DeadLetter):
                dead[msg.payload.original_id or ""] = msg.payload.reason

        try:
            await bus.consume(Subjects.EVENTS, on_event, group="t-events")
            await bus.consume(Subjects.DLQ, on_dead, group="t-dlq")
            with crew_of(bus_url, new_schema(pg_database), cfg, tmp_path / "logs", worker) as crew:
                (first,) = crew.processes
                await bus.publish(review_task("a"))
                await until("the model is asked for task a", asked.is_set, 120)
                first.signal(signal.SIGTERM)
                await until("the worker is stopping", lambda: "stopping" in first.tail(), 60)
                # b reaches the broker while the stopping worker is the role's only one
                await bus.publish(review_task("b"))
                second = crew.spawn(*worker)
                await asyncio.to_thread(second.wait_ready)
                # the live worker answers b while the stopping one still works on a
                await until("b answered by the live worker", lambda: "b" in answered, 60)
                assert not release.is_set() and "a" not in answered
                assert answered["b"].split("-")[-2] == str(second.pid)  # reviewer-host-pid-i
                release.set()
                assert first.proc is not None
                code = await asyncio.to_thread(first.proc.wait, 120)
                assert code == 0, first.tail()
                await until("a answered", lambda: "a" in answered, 30)
                assert answered["a"].split("-")[-2] == str(first.pid)  # finished in its grace
                assert dead == {}
        finally:
            release.set()
            await bus.close()
