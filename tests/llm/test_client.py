"""The AutoGen model client over the router: conversions, structured output, stream, cancel."""

from __future__ import annotations

import asyncio
import json

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import StructuredMessage, TextMessage
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool

from plantcrew.errors import ModelError
from plantcrew.llm import ModelRouter
from plantcrew.llm.convert import response_format_for, to_openai_messages, to_openai_tools
from plantcrew.llm.protocol import render_data_block
from tests.llm.conftest import stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, PROPOSE, ActionOut, DiagnosisOut


def data_message(data: dict) -> UserMessage:
    return UserMessage(content=f"Do the task.\n{render_data_block(data)}", source="user")


def test_messages_convert_to_openai_shapes() -> None:
    msgs = to_openai_messages(
        [
            SystemMessage(content="sys"),
            UserMessage(content="hi", source="user"),
            AssistantMessage(
                content=[FunctionCall(id="c1", name="read", arguments='{"d": 1}')],
                thought="let me look",
                source="a",
            ),
            FunctionExecutionResultMessage(
                content=[FunctionExecutionResult(content="42", name="read", call_id="c1")]
            ),
            AssistantMessage(content="done", source="a"),
        ]
    )
    assert msgs == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "let me look",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"d": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "done"},
    ]


def test_tools_and_json_output_convert() -> None:
    def read_sensor(device_id: str) -> float:
        """Latest reading of a device."""
        return 1.0

    tools = to_openai_tools([FunctionTool(read_sensor, description="Latest reading")])
    assert tools[0]["type"] == "function"
    assert tools[0]["function"]["name"] == "read_sensor"
    assert tools[0]["function"]["parameters"]["required"] == ["device_id"]
    assert response_format_for(True) == {"type": "json_object"}
    assert response_format_for(None) is None
    fmt = response_format_for(DiagnosisOut)
    assert fmt is not None and fmt["json_schema"]["schema"]["required"] == [
        "root_cause",
        "confidence",
        "evidence",
        "summary",
    ]


async def test_create_with_structured_output_on_the_playbook(router: ModelRouter) -> None:
    client = router.client("triage")
    result = await client.create([data_message(DIAGNOSE)], json_output=DiagnosisOut)
    assert result.finish_reason == "stop"
    out = DiagnosisOut.model_validate_json(result.content)  # type: ignore[arg-type]
    assert out.root_cause == "cavitation"
    calls = client.drain_calls()
    assert len(calls) == 1 and client.drain_calls() == []
    assert calls[0].deployment == "triage-playbook" and calls[0].model_group == "triage"
    assert calls[0].prompt[0]["role"] == "user" and calls[0].response == result.content
    assert client.total_usage().prompt_tokens == calls[0].prompt_tokens > 0


async def test_assistant_agent_end_to_end_on_the_playbook(router: ModelRouter) -> None:
    client = router.client("reasoning")
    agent = AssistantAgent(
        "operator",
        model_client=client,
        system_message="Propose an action.",
        output_content_type=ActionOut,
    )
    result = await agent.run(
        task=TextMessage(content=f"Propose.\n{render_data_block(PROPOSE)}", source="user")
    )
    answer = result.messages[-1]
    assert isinstance(answer, StructuredMessage)
    assert isinstance(answer.content, ActionOut)
    assert (answer.content.command, answer.content.parameters) == ("set_speed", {"speed_pct": 70})
    assert [c.deployment for c in client.drain_calls()] == ["reasoning-playbook"]


async def test_create_stream_yields_text_then_the_result(router: ModelRouter) -> None:
    client = router.client("triage")
    items = [
        i async for i in client.create_stream([data_message(DIAGNOSE)], json_output=DiagnosisOut)
    ]
    *chunks, final = items
    assert chunks and all(isinstance(c, str) for c in chunks)
    assert isinstance(final, CreateResult)
    assert "".join(chunks) == final.content
    (call,) = client.drain_calls()
    assert call.deployment == "triage-playbook" and call.response == final.content
    assert call.completion_tokens > 0


async def test_agent_streaming_on_the_playbook(router: ModelRouter) -> None:
    agent = AssistantAgent(
        "diagnostic",
        model_client=router.client("triage"),
        output_content_type=DiagnosisOut,
        model_client_stream=True,
    )
    result = await agent.run(
        task=TextMessage(content=f"Diagnose.\n{render_data_block(DIAGNOSE)}", source="user")
    )
    assert isinstance(result.messages[-1], StructuredMessage)


async def test_a_tool_call_comes_back_as_function_calls(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.tool_call("read_sensor", {"device_id": "pump1"}))
    client = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "primary")).client("triage")

    def read_sensor(device_id: str) -> float:
        """Latest reading of a device."""
        return 1.0

    result = await client.create(
        [data_message(DIAGNOSE)], tools=[FunctionTool(read_sensor, description="Latest reading")]
    )
    assert result.finish_reason == "function_calls"
    assert isinstance(result.content, list)
    (call,) = result.content
    assert (call.name, json.loads(call.arguments)) == ("read_sensor", {"device_id": "pump1"})
    body = stub.requests[-1][1]
    assert body["tools"][0]["function"]["name"] == "read_sensor"
    assert body["tool_choice"] == "auto"


async def test_structured_output_reaches_the_wire_as_json_schema(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.json({"root_cause": "x"}))
    client = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "primary")).client("triage")
    await client.create([data_message(DIAGNOSE)], json_output=DiagnosisOut)
    fmt = stub.requests[-1][1]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "DiagnosisOut"


async def test_cancellation_stops_the_call_and_is_recorded(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.json({"late": True}, delay_s=3))
    client = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "slow")).client("triage")
    token = CancellationToken()
    task = asyncio.create_task(client.create([data_message(DIAGNOSE)], cancellation_token=token))
    while not stub.requests:  # the request reached the server
        await asyncio.sleep(0.01)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (call,) = client.drain_calls()
    assert (call.ok, call.error) == (False, "cancelled")


async def test_token_counting_and_model_info(router: ModelRouter) -> None:
    client = router.client("triage")
    short = [UserMessage(content="pump1 flow is low", source="user")]
    long = [UserMessage(content="pump1 flow is low " * 50, source="user")]
    assert 0 < client.count_tokens(short) < client.count_tokens(long)
    assert client.remaining_tokens(short) == 128_000 - client.count_tokens(short)
    info = client.model_info
    assert info["structured_output"] is True and info["json_output"] is True
    assert client.capabilities["function_calling"] is True


def test_unknown_group_is_a_model_error(router: ModelRouter) -> None:
    with pytest.raises(ModelError):
        router.client("nope")


async def test_streaming_over_http_after_a_fallback(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    stub.script("gpt-4o", Reply.json({"root_cause": "cavitation"}))
    client = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "primary"),
        stub_deployment(stub, "gpt-4o", "secondary"),
    ).client("triage")
    items = [i async for i in client.create_stream([data_message(DIAGNOSE)])]
    *chunks, final = items
    assert len(chunks) > 1 and "".join(chunks) == '{"root_cause": "cavitation"}'
    assert isinstance(final, CreateResult) and final.finish_reason == "stop"
    (call,) = client.drain_calls()
    assert (call.deployment, call.fallback) == ("secondary", True)
    assert (call.prompt_tokens, call.completion_tokens) == (11, 7)
    assert call.error is not None and "primary: InternalServerError (500)" in call.error
    assert call.cost_usd > 0


async def test_a_streamed_tool_call_is_assembled(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.tool_call("read_sensor", {"device_id": "pump1"}))
    client = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "primary")).client("triage")
    schema = {
        "name": "read_sensor",
        "parameters": {"type": "object", "properties": {"device_id": {"type": "string"}}},
    }
    *_, final = [i async for i in client.create_stream([data_message(DIAGNOSE)], tools=[schema])]
    assert isinstance(final, CreateResult) and final.finish_reason == "function_calls"
    assert isinstance(final.content, list)
    assert [(c.name, json.loads(c.arguments)) for c in final.content] == [
        ("read_sensor", {"device_id": "pump1"})
    ]


async def test_a_stream_failing_everywhere_records_the_deployments_tried(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    stub.script("gpt-4o", Reply.error(429))
    client = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "primary"),
        stub_deployment(stub, "gpt-4o", "secondary"),
        playbook_last_resort=False,
    ).client("triage")
    with pytest.raises(Exception):  # noqa: B017  (litellm's error, whichever it is)
        _ = [i async for i in client.create_stream([data_message(DIAGNOSE)])]
    (call,) = client.drain_calls()
    assert (call.ok, call.deployment) == (False, "none")
    assert call.error is not None
    assert "primary: InternalServerError (500)" in call.error
    assert "secondary: RateLimitError (429)" in call.error
