"""Fixtures of the model layer tests: the shipped config's router and a loopback OpenAI stub."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from plantcrew.llm import ModelRouter, models_config_from_dict
from tests.llm.openai_stub import OpenAIStub

STUB_KEY_ENV = "PLANTCREW_TEST_STUB_KEY"
STUB_KEY = "sk-test-NEVER-LOG-ME-1234567890"


def _loopback(host: object) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test of this folder that tries to reach beyond loopback (DNS or connect)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise AssertionError(f"test tried to reach {address!r} beyond loopback")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback(host.decode() if isinstance(host, bytes) else host):
            raise AssertionError(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session")
def router() -> ModelRouter:
    """The router of the shipped config/models.yaml (offline: every group on the playbook)."""
    return ModelRouter.from_file()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    """A running loopback OpenAI stub; its API key is in the environment as STUB_KEY_ENV."""
    monkeypatch.setenv(STUB_KEY_ENV, STUB_KEY)
    with OpenAIStub() as server:
        yield server


def stub_deployment(stub: OpenAIStub, model: str, name: str, **extra: Any) -> dict[str, Any]:
    """A models.yaml deployment entry for ``openai/<model>`` served by the stub."""
    return {
        "model": f"openai/{model}",
        "name": name,
        "api_base": stub.base_url,
        "api_key_env": STUB_KEY_ENV,
        "max_retries": 0,
        **extra,
    }


def stub_router(
    stub: OpenAIStub,
    *deployments: dict[str, Any],
    num_retries: int = 0,
    playbook_last_resort: bool = True,
    **router: Any,
) -> ModelRouter:
    """A router with one group ``triage`` of ``deployments`` (in order)."""
    cfg = models_config_from_dict(
        {
            "groups": {"triage": {"deployments": list(deployments)}},
            "router": {
                "num_retries": num_retries,
                "playbook_last_resort": playbook_last_resort,
                "cooldown_time_s": 0,
                **router,
            },
        }
    )
    return ModelRouter(cfg)
