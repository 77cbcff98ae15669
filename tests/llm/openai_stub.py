"""A loopback test double that speaks the OpenAI chat-completions HTTP API.

``OpenAIStub`` runs a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 at a free port, in a daemon
thread, and serves ``POST /v1/chat/completions``. What it answers is chosen per model name (the
``model`` field of the request) from a script of :class:`Reply` objects: each request to a model
takes the next reply of its script (the last one repeats). Replies:

- ``Reply.json(obj)``: a completion whose content is ``json.dumps(obj)``;
- ``Reply.text(s)``: a completion whose content is ``s`` (e.g. malformed JSON);
- ``Reply.tool_call(name, args)``: a completion with one tool call;
- ``Reply.error(status, retry_after=None, message=None, error_type=None, code=None)``: an
  OpenAI-style error body with that status (429 with ``Retry-After``, 500, ...); a message
  and code as OpenAI sends them make litellm map it, e.g. a context-window error is
  ``Reply.error(400, message="This model's maximum context length is 8192 tokens",
  error_type="invalid_request_error", code="context_length_exceeded")``;
- any reply with ``delay_s`` sleeps that long before answering (a slow deployment).

A request with ``"stream": true`` gets the same reply as server-sent events
(``chat.completion.chunk`` objects: content in pieces of ``stream_piece`` characters, tool
calls in one delta, a finish chunk, a usage chunk when ``stream_options.include_usage``, then
``data: [DONE]``), as the OpenAI API sends them.

Instead of a script, ``stub.respond(model, fn)`` answers each request to ``model`` with
``fn(parsed JSON body)`` (a scripted model that reads what it was asked).

Every request is recorded in ``stub.requests`` as ``(model, parsed JSON body)`` and its
``Authorization`` header in ``stub.authorizations``. Nothing leaves
loopback.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    retry_after: float | None = None
    error_message: str | None = None
    error_type: str = "server_error"
    error_code: str | None = None
    delay_s: float = 0.0
    prompt_tokens: int = 11
    completion_tokens: int = 7

    @classmethod
    def json(cls, obj: Any, **kw: Any) -> Reply:
        return cls(content=json.dumps(obj), **kw)

    @classmethod
    def text(cls, text: str, **kw: Any) -> Reply:
        return cls(content=text, **kw)

    @classmethod
    def tool_call(cls, name: str, args: dict[str, Any], **kw: Any) -> Reply:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        return cls(tool_calls=[call], **kw)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        **kw: Any,
    ) -> Reply:
        return cls(
            status=status,
            retry_after=retry_after,
            error_message=message,
            error_type=error_type or "server_error",
            error_code=code,
            **kw,
        )


class OpenAIStub:
    """The server; use as a context manager. ``base_url`` is ``http://127.0.0.1:<port>/v1``."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.responders: dict[str, Callable[[dict[str, Any]], Reply]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.authorizations: list[str] = []
        self.stream_piece = 8
        self._served: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found", "type": "not_found"}})
                    return
                stub.authorizations.append(self.headers.get("Authorization") or "")
                reply = stub._next(str(body.get("model")), body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    headers = {}
                    if reply.retry_after is not None:
                        headers["Retry-After"] = str(reply.retry_after)
                    self._send(
                        reply.status,
                        {
                            "error": {
                                "message": reply.error_message or f"stub error {reply.status}",
                                "type": reply.error_type,
                                "param": None,
                                "code": reply.error_code or str(reply.status),
                            }
                        },
                        headers,
                    )
                    return
                if body.get("stream"):
                    self._stream(reply, body)
                    return
                message: dict[str, Any] = {"role": "assistant", "content": reply.content}
                finish = "stop"
                if reply.tool_calls:
                    message["tool_calls"] = reply.tool_calls
                    finish = "tool_calls"
                self._send(
                    200,
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": 1700000000,
                        "model": body.get("model"),
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    },
                )

            def _stream(self, reply: Reply, body: dict[str, Any]) -> None:
                base = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": body.get("model"),
                }
                events: list[dict[str, Any]] = []
                text = reply.content or ""
                n = stub.stream_piece
                for i in range(0, len(text), n):
                    delta: dict[str, Any] = {"content": text[i : i + n]}
                    if i == 0:
                        delta["role"] = "assistant"
                    events.append(
                        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    )
                if reply.tool_calls:
                    calls = [{"index": j, **c} for j, c in enumerate(reply.tool_calls)]
                    events.append(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"role": "assistant", "tool_calls": calls},
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                events.append(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {},
                                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                            }
                        ],
                    }
                )
                if (body.get("stream_options") or {}).get("include_usage"):
                    events.append(
                        {
                            **base,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": reply.prompt_tokens,
                                "completion_tokens": reply.completion_tokens,
                                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                            },
                        }
                    )
                payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
                data = (payload + "data: [DONE]\n\n").encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def _next(self, model: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append((model, body))
            responder = self.responders.get(model)
        if responder is not None:
            return responder(body)
        with self._lock:
            script = self.scripts.get(model) or [Reply.error(404)]
            i = self._served[model]
            self._served[model] += 1
            return script[min(i, len(script) - 1)]

    def script(self, model: str, *replies: Reply) -> None:
        """Set what ``model`` answers, in order (the last reply repeats)."""
        with self._lock:
            self.scripts[model] = list(replies)
            self._served[model] = 0

    def respond(self, model: str, fn: Callable[[dict[str, Any]], Reply]) -> None:
        """Answer every request to ``model`` with ``fn(request body)``."""
        with self._lock:
            self.responders[model] = fn

    def count(self, model: str) -> int:
        """How many requests ``model`` has received."""
        with self._lock:
            return sum(1 for m, _ in self.requests if m == model)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
