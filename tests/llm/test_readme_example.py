"""The README's "Using the AutoGen model client on its own" example runs as written.

:data:`EXAMPLE` is the README's Python block, verbatim; it runs here against two loopback
servers (the first fails, the second answers) through a ``models.yaml`` shaped like the
README's. When README.md has the section, its block must equal :data:`EXAMPLE`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.llm.conftest import STUB_KEY_ENV
from tests.llm.openai_stub import OpenAIStub, Reply

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "Using the AutoGen model client on its own"

EXAMPLE = """\
import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken
from autogen_core.models import SystemMessage, UserMessage

from plantcrew.llm import ModelRouter


async def main() -> None:
    router = ModelRouter.from_file("models.yaml")  # retries, fallbacks, timeouts, cooldowns
    client = router.client("chat")  # an AutoGen ChatCompletionClient for the group "chat"

    # One completion.
    result = await client.create([
        SystemMessage(content="Answer in one line."),
        UserMessage(content="What does NPSH stand for?", source="user"),
    ])
    print(result.content, result.usage)

    # Streaming: text pieces as they arrive, then the whole CreateResult.
    async for item in client.create_stream(
            [UserMessage(content="Name three pump faults.", source="user")]):
        if isinstance(item, str):
            print(item, end="", flush=True)
        else:
            print(f" ({item.usage.completion_tokens} tokens)")

    # Cancellation: the call stops and raises asyncio.CancelledError.
    token = CancellationToken()
    call = asyncio.ensure_future(client.create(
        [UserMessage(content="Write a long essay.", source="user")], cancellation_token=token))
    token.cancel()
    try:
        await call
    except asyncio.CancelledError:
        print("cancelled")

    # In any AgentChat agent.
    agent = AssistantAgent("helper", model_client=client)
    reply = await agent.run(task="Is cavitation bad for a pump?")
    print(reply.messages[-1].content)

    # Which deployment served each call, fallbacks, tokens and cost.
    for c in client.drain_calls():
        print(c.deployment, c.fallback, c.prompt_tokens, c.completion_tokens,
              f"${c.cost_usd:.6f}", c.error)
    print(client.total_usage())


asyncio.run(main())
"""


def models_yaml(primary: OpenAIStub, local: OpenAIStub) -> dict[str, Any]:
    """The README's models.yaml, with the two deployments on loopback servers."""
    return {
        "groups": {
            "chat": {
                "deployments": [
                    {
                        "model": "openai/gpt-4o-mini",
                        "api_base": primary.base_url,
                        "api_key_env": STUB_KEY_ENV,
                        "timeout_s": 20,
                        "max_retries": 0,
                    },
                    {"model": "hosted_vllm/llama3", "api_base": local.base_url, "timeout_s": 60},
                ]
            }
        },
        "router": {"num_retries": 0, "playbook_last_resort": False},
    }


def test_the_example_runs(
    stub: OpenAIStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    with OpenAIStub() as local:
        local.script("llama3", Reply.text("Net positive suction head."))
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(models_yaml(stub, local)))
        monkeypatch.chdir(tmp_path)
        exec(compile(EXAMPLE, "README example", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "Net positive suction head. RequestUsage(prompt_tokens=11, completion_tokens=7)" in out
    assert "\nNet positive suction head. (7 tokens)\n" in out and "\ncancelled\n" in out
    served = re.findall(r"^(chat-\d|none) (True|False) (\d+) (\d+) \$([\d.]+) (.*)$", out, re.M)
    assert [(d, f) for d, f, *_ in served] == [
        ("chat-1", "True"),
        ("chat-1", "True"),
        ("none", "False"),
        ("chat-1", "True"),
    ]
    assert served[0][5] == "chat-0: InternalServerError (500)"
    assert served[2][5] == "cancelled"
    assert "RequestUsage(prompt_tokens=33, completion_tokens=21)" in out


def test_the_readme_shows_this_example() -> None:
    if not README.is_file() or HEADING not in README.read_text():
        pytest.skip(f"README.md has no section {HEADING!r} yet")
    check_section(README.read_text())


def check_section(text: str) -> None:
    """The section's YAML is a valid models.yaml and its Python block is EXAMPLE."""
    from plantcrew.llm import models_config_from_dict

    section = text.split(HEADING, 1)[1]
    config = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert config is not None
    assert models_config_from_dict(yaml.safe_load(config.group(1))).groups["chat"]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None and block.group(1) == EXAMPLE
