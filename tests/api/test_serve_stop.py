"""``plantcrew serve`` on SIGTERM (Kubernetes' and compose's normal stop) shuts down
gracefully and exits 0: it stops accepting connections, ends its open event streams with a
closing comment (a complete chunked body, so EventSource reconnects elsewhere with its
``Last-Event-ID``), lets the request in flight finish, closes the bus and the database; with
``--scenario`` it stops the run's crew at the end of a step (the run is left ``interrupted``).

It used to be killed by its own signal (exit -15, 143 in a shell): uvicorn's signal capture
re-raises SIGTERM once it has shut down, after restoring the default handler, so the process
died before closing the bus and the database; and an open event stream held the shutdown for
uvicorn's 5 s and was then cancelled (a traceback, and a stream cut mid-body).

The real CLI in a subprocess on a free loopback port, SQLite, and NATS or the memory bus.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from plantcrew.store import Store
from plantcrew.store.access import AccessStore
from tests.api.conftest import ROOT, SCENARIO
from tests.conftest import bus_url_for, free_port

START_S = 90.0
STOP_BOUND_S = 10.0  # SIGTERM to exit with nothing slow in flight (the grace is 20 s)


@dataclass
class Served:
    """A ``plantcrew serve`` process; stderr is kept in ``err``."""

    proc: subprocess.Popen[str]
    port: int
    token: str
    err: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """Start ``plantcrew serve ARGS`` with ``start(*args)``; killed at the end if still up."""
    procs: list[subprocess.Popen[str]] = []
    db_url = f"sqlite:///{tmp_path / 'serve.db'}"

    def start(*args: str) -> Served:
        store = Store(db_url)
        try:
            _, token = AccessStore(store).create_token("ops", "operator")
        finally:
            store.dispose()
        port = free_port()
        err = tmp_path / f"serve-{port}.err"
        env = {**os.environ, "PLANTCREW_LOG_JSON": "true"}
        with err.open("w") as err_f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plantcrew.cli", "serve", "--port", str(port),
                 "--db", db_url, *args],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err_f, text=True,
            )  # fmt: skip
        procs.append(proc)
        served = Served(proc, port, token, err)
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, served.stderr()[-3000:]
            assert time.monotonic() < deadline, f"not started in {START_S:g} s"
            try:
                if httpx.get(f"{served.base}/startupz", timeout=2).status_code == 200:
                    return served
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    yield db_url, start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@dataclass
class Stream:
    """An event stream read in a thread: its text, and how it ended."""

    text: str = ""
    opened: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def read(self, served: Served) -> None:
        headers = {"Authorization": f"Bearer {served.token}"}
        try:
            with httpx.stream(
                "GET", f"{served.base}/api/v1/incidents/stream", headers=headers, timeout=60
            ) as r:
                assert r.status_code == 200, r.read()
                for chunk in r.iter_text():
                    self.text += chunk
                    self.opened.set()
        except BaseException as exc:  # what the test reports
            self.error = exc
        finally:
            self.ended.set()


def _post_head(served: Served, body: bytes) -> bytes:
    return (
        "POST /api/v1/telemetry HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{served.port}\r\n"
        f"Authorization: Bearer {served.token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on ``sock`` (read until it closes)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("mode", ["nats", "scenario"])
def test_sigterm_ends_streams_finishes_the_request_in_flight_and_exits_0(
    serve: tuple[str, object], mode: str
) -> None:
    db_url, start = serve
    if mode == "nats":
        served = start("--bus", bus_url_for("nats"))  # type: ignore[operator]
    else:  # a crew in process, paced so that the run is still going at SIGTERM
        served = start("--scenario", str(SCENARIO), "--speed", "5")  # type: ignore[operator]
    stream = Stream()
    threading.Thread(target=stream.read, args=(served,), daemon=True).start()
    assert stream.opened.wait(30), served.stderr()[-3000:]

    # a request in flight: headers and half its body sent, the rest after SIGTERM
    batch = {"device_id": "pumpX", "readings": [
        {"device_id": "pumpX", "sensor": "flow", "value": 1.0, "unit": "m3/h", "ts": 1.0}
    ]}  # fmt: skip
    body = json.dumps({"batches": [batch]}).encode()
    inflight = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    inflight.sendall(_post_head(served, body) + body[:10])
    time.sleep(0.5)  # the server has parsed the headers and is waiting for the body

    t0 = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    assert stream.ended.wait(STOP_BOUND_S), "the event stream was not ended on SIGTERM"
    # the listener is closed: no new connection is accepted while the server drains
    deadline = time.monotonic() + 3
    while True:
        try:
            socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    assert served.proc.poll() is None, "exited before the request in flight was finished"
    inflight.sendall(body[10:])
    status, _, answer = _response(inflight)
    inflight.close()
    code = served.proc.wait(STOP_BOUND_S + 5)
    took = time.monotonic() - t0
    err = served.stderr()

    assert code == 0, f"exit {code}:\n{err[-3000:]}"
    assert took < STOP_BOUND_S, f"{took:.1f} s from SIGTERM to exit"
    assert status == 202, answer
    assert json.loads(answer)["accepted"] == 1  # and the connection closed after it
    # the stream's body was complete (no cut chunked body) and said why it ended
    assert stream.error is None, repr(stream.error)
    assert stream.text.rstrip().endswith(": stream ended: server stopping"), stream.text[-500:]
    assert "Traceback" not in err and "Exception in ASGI" not in err, err[-3000:]
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "stopped" for e in events), err[-3000:]
    if mode == "scenario":  # the crew stopped at a step's end: the run is not left running
        store = Store(db_url)
        try:
            (run,) = store.runs()
        finally:
            store.dispose()
        assert run.status == "interrupted", run.status
        assert 0 < run.plant_time < 600


def test_a_request_past_the_grace_is_cut_and_serve_still_exits_0(
    serve: tuple[str, object],
) -> None:
    _, start = serve
    served = start("--bus", bus_url_for("memory"), "--grace", "1")  # type: ignore[operator]
    body = b'{"batches": []}'
    stuck = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    stuck.sendall(_post_head(served, body) + body[:3])  # the rest never comes
    time.sleep(0.5)
    t0 = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    code = served.proc.wait(15)
    took = time.monotonic() - t0
    status, _, answer = _response(stuck)
    stuck.close()
    err = served.stderr()
    assert code == 0, f"exit {code}:\n{err[-3000:]}"
    assert 1.0 <= took < 6.0, f"{took:.1f} s from SIGTERM to exit with --grace 1"
    assert status == 503 and "stopped before this request finished" in json.loads(answer)["detail"]
    assert "Traceback" not in err and "Exception in ASGI" not in err, err[-3000:]


def test_a_taken_port_is_one_error_line_and_exit_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        args = ["serve", "--port", str(port), "--bus", bus_url_for("memory")]
        args += ["--db", f"sqlite:///{tmp_path / 'taken.db'}"]
        proc = subprocess.run(
            [sys.executable, "-m", "plantcrew.cli", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"error: the server could not start on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr, proc.stderr
