"""A PostgreSQL server that accepts TCP connections but never answers (a hung host, a
half-open firewall, a proxy whose backend is gone): opening the store must fail with a
StoreError after the connect timeout, not wait for ever."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from plantcrew.errors import StoreError
from plantcrew.store import Store
from plantcrew.store.db import PG_CONNECT_TIMEOUT_S


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_is_a_store_error_not_a_hang(silent_server: int) -> None:
    outcome: list[BaseException | None] = []

    def open_store() -> None:
        try:
            Store(f"postgresql://postgres@127.0.0.1:{silent_server}/plantcrew").dispose()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    opener = threading.Thread(target=open_store, daemon=True)
    opener.start()
    opener.join(PG_CONNECT_TIMEOUT_S * 6)  # a bound on a hang, not a timing assertion
    assert outcome, "opening a store on a server that never answers did not return"
    assert isinstance(outcome[0], StoreError), repr(outcome[0])
    assert f"127.0.0.1:{silent_server}" in str(outcome[0])  # it names the database
