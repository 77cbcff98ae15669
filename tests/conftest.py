"""Shared fixtures: real servers where the machine has them, clear skips where it does not.

Under CI (``CI=true``) a missing server is a failure, not a skip: CI must test the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
START_HINT = "start it with: docker compose -f infra/compose.yaml up -d {svc}"

NATS_URL = os.environ.get("PLANTCREW_TEST_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("PLANTCREW_TEST_REDIS_URL", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("PLANTCREW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


_NAMESPACES: list[str] = []  # broker URLs handed out, whose streams/keys are dropped at the end


def namespaced(url: str) -> str:
    """A broker URL with a fresh namespace, so tests never see each other's messages.

    The namespace's JetStream stream or Redis keys are deleted when the session ends.
    """
    sep = "&" if "?" in url else "?"
    fresh = f"{url}{sep}namespace=t{uuid.uuid4().hex[:12]}"
    _NAMESPACES.append(fresh)
    return fresh


async def drop_namespace(url: str) -> None:
    """Delete what a namespaced broker URL left on its server (NATS stream, Redis keys)."""
    parts = urlparse(url)
    ns = parse_qs(parts.query).get("namespace", [""])[-1]
    if not ns:
        return
    server = urlunparse(parts._replace(query="", fragment=""))
    if parts.scheme == "nats":
        import nats
        import nats.js.errors

        nc = await nats.connect(server, connect_timeout=2, max_reconnect_attempts=0)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(f"PLANTCREW_{ns}")
        finally:
            await nc.close()
    elif parts.scheme == "redis":
        from redis.asyncio import Redis

        r = Redis.from_url(server, socket_connect_timeout=2)
        try:
            batch = [key async for key in r.scan_iter(match=f"{ns}.*", count=1000)]
            for i in range(0, len(batch), 500):
                await r.unlink(*batch[i : i + 500])
        finally:
            await r.aclose()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_namespaces() -> Iterator[None]:
    """At the end of the session, delete every namespace ``namespaced`` handed out."""
    yield
    urls, _NAMESPACES[:] = list(_NAMESPACES), []

    async def drop_all() -> None:
        for url in urls:
            try:
                await asyncio.wait_for(drop_namespace(url), 10)
            except Exception as exc:  # a server gone by now: nothing to clean
                print(f"could not clean {url}: {exc!r}")

    if urls:
        asyncio.run(drop_all())


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


def pg_url_for(database: str, *, schema: str | None = None) -> str:
    """``PG_URL`` pointing at ``database`` (and, with ``schema``, searching only that schema)."""
    parts = urlparse(PG_URL)
    url = urlunparse(parts._replace(path=f"/{database}", query=""))
    if schema is not None:
        url += "?options=" + quote(f"-csearch_path={schema}")
    return url


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped when it ends.

    Skips (fails under CI) when PostgreSQL is not running. Yields the database's URL.
    """
    require_server("postgresql", "127.0.0.1", 5432)
    import psycopg

    name = f"plantcrew_t{uuid.uuid4().hex[:12]}"
    admin = urlunparse(urlparse(PG_URL)._replace(query=""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url_for(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_schema_url(pg_database: str) -> Iterator[str]:
    """A fresh, empty schema in the session's database, as a URL; dropped after the test."""
    import psycopg

    schema = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_url_for(urlparse(pg_database).path.lstrip("/"), schema=schema)
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crew.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url
