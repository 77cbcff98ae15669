"""Shared fixtures: real servers where the machine has them, clear skips where it does not.

Under CI (``CI=true``) a missing server is a failure, not a skip: CI must test the real thing.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
START_HINT = "start it with: docker compose -f infra/compose.yaml up -d {svc}"

NATS_URL = os.environ.get("PLANTCREW_TEST_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("PLANTCREW_TEST_REDIS_URL", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("PLANTCREW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_server(svc: str, host: str, port: int) -> None:
    """Skip (or, under CI, fail) when ``svc`` does not answer on host:port."""
    if _reachable(host, port):
        return
    msg = f"{svc} not reachable at {host}:{port}; " + START_HINT.format(svc=svc)
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_shared_data() -> Path:
    """The shared benchmark data folder, or a skip saying where it is expected."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


def namespaced(url: str) -> str:
    """A broker URL with a fresh namespace, so tests never see each other's messages."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}namespace=t{uuid.uuid4().hex[:12]}"


def bus_url_for(name: str) -> str:
    if name == "memory":
        return f"memory://t{uuid.uuid4().hex[:12]}"
    if name == "nats":
        require_server("nats", "127.0.0.1", 4222)
        return namespaced(NATS_URL)
    if name == "redis":
        require_server("redis", "127.0.0.1", 6379)
        return namespaced(REDIS_URL)
    raise ValueError(name)


@pytest.fixture(params=["memory", "nats", "redis"])
def bus_url(request: pytest.FixtureRequest) -> str:
    """Every bus backend, each against its real server (skipped where absent, CI excepted)."""
    return bus_url_for(request.param)
