"""The database goes away under a running service: requests get 503 with ``Retry-After`` and
a problem naming the cause, ``/readyz`` says not ready, ``/healthz`` stays up, and the
service recovers when the database is back.

The app talks to the real PostgreSQL through a TCP forwarder on loopback that the test
stops (closing the listening socket and every forwarded connection) and starts again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
from fastapi.testclient import TestClient

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import Store
from tests.api.conftest import make_tokens


class Forwarder:
    """A TCP forwarder ``127.0.0.1:<port>`` -> ``target``, one thread pair per connection.

    ``stop()`` closes the listener and every forwarded connection (a client then gets
    "connection refused" or a reset); ``start()`` listens again on the same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(64)
        self.port = int(lsock.getsockname()[1])
        self._listener = lsock
        threading.Thread(target=self._accept, args=(lsock,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                client, _ = lsock.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fwd = Forwarder(("127.0.0.1", 5432))
    fwd.start()
    yield fwd
    fwd.stop()


def _through(url: str, port: int) -> str:
    parts = urlparse(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunparse(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


def test_database_down_is_503_with_retry_after_and_not_ready(
    pg_schema_url: str, forwarder: Forwarder, model_router: Any
) -> None:
    store = Store(_through(pg_schema_url, forwarder.port))
    tokens = make_tokens(store)
    app = create_app(
        ApiSettings(),
        store=store,
        bus_url=f"memory://down{uuid.uuid4().hex[:8]}",
        router=model_router,
    )
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
    try:
        with TestClient(app) as client:
            assert client.get("/api/v1/incidents", headers=auth).status_code == 200
            assert client.get("/readyz").status_code == 200

            forwarder.stop()
            for path in ("/api/v1/incidents", "/api/v1/me", "/api/v1/approvals"):
                r = client.get(path, headers=auth)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert int(r.headers["retry-after"]) >= 1
                body = r.json()
                assert body["status"] == 503 and body["title"] == "Service unavailable"
                assert body["detail"].startswith("database unreachable"), body
                assert body["request_id"] == r.headers["x-request-id"]
            ready = client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["database"]["ok"] is False and checks["bus"]["ok"] is True
            assert "database unreachable" in checks["database"]["detail"]
            assert client.get("/healthz").status_code == 200

            forwarder.start()  # the database is back: so is the service
            assert client.get("/api/v1/incidents", headers=auth).status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        store.dispose()
