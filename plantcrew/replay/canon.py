"""Canonical forms of a run's messages, so two runs of the same scenario can be compared.

Two runs of one scenario with one seed say the same things with different names: every run
has its own id (``run-<12 hex>``), incident ids embed its last 8 characters
(``inc-<8 hex>-<n>``, and task, action and approval ids build on those), message ids are
time-ordered UUIDs, approval tokens are HMACs over those ids, and model calls take however long
they take. :class:`Canon` replaces the run's id and its 8-character suffix by ``<run>``, every
UUID by ``<uuid>``, every ``token`` by ``<token>``, and keeps of each model call what the crew
depends on (group, deployment, model, prompt, response, tokens, flags; not latency or cost).

:func:`normalise_log` turns a conversation log into :class:`NormalMessage` items whose
``form`` is equal between runs exactly when the messages say the same thing: same type,
sender, subject, simulated time, plant time, incident, payload, and the same cause, named
structurally as ``<sender>#<k>`` (the cause is the k-th message of that sender) so it does
not depend on message ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RECORDED_PREFIX = "recorded/"
MASKED_KEYS = frozenset({"token", "approval_token"})
VOLATILE_CALL_FIELDS = frozenset({"latency_ms", "cost_usd"})
OUTSIDE = "<outside the log>"


class LogRecord(Protocol):
    """What :func:`normalise_log` reads of a conversation-log row (a ``MessageRecord``,
    whose ``body`` is JSON text, or a timeline ``Step``, whose ``body`` is parsed)."""

    @property
    def id(self) -> str: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def source(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def plant_time(self) -> float: ...
    @property
    def body(self) -> str | dict[str, Any]: ...


_ATTEMPT = re.compile(
    r"(?P<name>[\w.:-]+): [A-Z][A-Za-z]*(?: \(\d{3}\))?(?: \(no answer within [^)]*\))?(?: x\d+)?"
)
_NAMED = re.compile(r"(?P<name>[\w.:-]+): (?:[A-Z][A-Za-z]*|cooling down)")
_KEPT = ("invalid output", "cancelled", "budget")


def error_form(text: str | None) -> str | None:
    """A model call's ``error`` or ``degraded_reason`` without error texts and retry counts.

    Each failed attempt ``"<deployment>: <ErrorType> (429) x2"`` becomes ``"<deployment>:
    failed"`` (which deployments failed matters; how they said so does not); a failure with
    no deployment named becomes ``"failed"``; the crew's own reasons (``"invalid output:
    ..."``, ``"cancelled"``, ``"budget: ..."``) are kept as they are.
    """
    if text is None or text.startswith(_KEPT):
        return text
    if "[tried " in text:
        return "failed [tried " + _ATTEMPT.sub(r"\g<name>: failed", text.rsplit("[tried ", 1)[1])
    normal = _ATTEMPT.sub(r"\g<name>: failed", text)
    if normal != text or ": " not in text or _NAMED.search(text):
        return normal
    return "failed"


def failed_deployments(text: str | None) -> list[str]:
    """The deployments a model call's ``error`` says failed (or were cooling down)."""
    if not text or text.startswith(_KEPT):
        return []
    part = text.rsplit("[tried ", 1)[1] if "[tried " in text else text
    return [m.group("name") for m in _NAMED.finditer(part)]


# the crew's roles (plantcrew.crews.config.ROLES) and the Coordinator; a test keeps them equal
ROLE_NAMES = ("coordinator", "monitor", "diagnostic", "operator", "safety", "reviewer")


def role_of(agent_id: str) -> str:
    """The role an agent id names (``operator-1``, ``operator-host-4242`` → ``operator``);
    other senders (people, the plant) are returned as they are."""
    head = agent_id.split("-", 1)[0]
    return head if head in ROLE_NAMES and head != agent_id else agent_id


class Canon:
    """Rewrites the names of one run (see module doc) in strings and nested JSON values.

    ``agents`` maps agent ids to the names to compare them by (e.g. their roles, when the
    run's workers were processes named after their host).
    """

    def __init__(self, run_id: str, agents: dict[str, str] | None = None) -> None:
        self.run_id = run_id
        self.suffix = run_id[-8:] if len(run_id) >= 12 else ""
        self.agents = sorted((agents or {}).items(), key=lambda kv: -len(kv[0]))

    def text(self, s: str) -> str:
        """``s`` with the run id, its suffix, every UUID and mapped agent id replaced."""
        if self.run_id:
            s = s.replace(self.run_id, "<run>")
        if self.suffix:
            s = s.replace(self.suffix, "<run>")
        for agent, name in self.agents:
            if agent in s:
                s = s.replace(agent, name)
        return UUID_RE.sub("<uuid>", s)

    def value(self, v: Any) -> Any:
        """A deep copy of the JSON value ``v`` in canonical form."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            for k, x in v.items():
                if k in MASKED_KEYS and isinstance(x, str):
                    out[k] = "<token>"
                elif k == "model_calls" and isinstance(x, list):
                    out[k] = [self.call(c) for c in x if isinstance(c, dict)]
                else:
                    out[k] = self.value(x)
            return out
        return v

    def call(self, c: dict[str, Any]) -> dict[str, Any]:
        """A model call (``ModelCallInfo`` JSON) without latency and cost, names canonical."""
        out = {k: self.value(v) for k, v in c.items() if k not in VOLATILE_CALL_FIELDS}
        model = out.get("model")
        if isinstance(model, str):
            out["model"] = model.removeprefix(RECORDED_PREFIX)
        out["error"] = error_form(c.get("error"))
        if isinstance(c.get("degraded_reason"), str):
            out["degraded_reason"] = error_form(self.text(c["degraded_reason"]))
        return out


@dataclass(frozen=True)
class NormalMessage:
    """One message of a log in canonical form.

    ``index`` is its 0-based position in the run's log, ``seq`` its log row number, ``nth``
    its 0-based position among the messages of its sender; ``form`` is what is compared.
    """

    index: int
    seq: int | None
    id: str
    source: str
    type: str
    plant_time: float
    nth: int
    form: dict[str, Any]
    body: dict[str, Any]


def normalise_log(
    records: Iterable[LogRecord], run_id: str, *, by_role: bool = False
) -> list[NormalMessage]:
    """The canonical form of each record of one run's conversation log, in log order.

    ``by_role``: senders are named by their role (:func:`role_of`), in ``source`` and inside
    payloads, so a run whose agents were worker processes compares with one whose agents
    ran in-process."""
    rows = list(records)
    agents = {r.source: role_of(r.source) for r in rows} if by_role else {}
    canon = Canon(run_id, {a: n for a, n in agents.items() if a != n})
    refs: dict[str, str] = {}
    counts: dict[str, int] = {}
    out: list[NormalMessage] = []
    for i, r in enumerate(rows):
        body = r.body if isinstance(r.body, dict) else json.loads(r.body)
        source = agents.get(r.source, r.source)
        nth = counts.get(source, 0)
        counts[source] = nth + 1
        refs[str(r.id)] = f"{source}#{nth}"
        cause = body.get("causation_id")
        form = {
            "type": r.type,
            "source": source,
            "subject": body.get("subject"),
            "time": body.get("time"),
            "plant_time": r.plant_time,
            "correlation": canon.text(body.get("correlation_id") or ""),
            "cause": refs.get(str(cause), OUTSIDE) if cause else None,
            "payload": canon.value(body.get("payload") or {}),
        }
        out.append(
            NormalMessage(i, r.seq, str(r.id), source, r.type, r.plant_time, nth, form, body)
        )
    return out


__all__ = [
    "OUTSIDE",
    "RECORDED_PREFIX",
    "ROLE_NAMES",
    "Canon",
    "LogRecord",
    "NormalMessage",
    "error_form",
    "failed_deployments",
    "normalise_log",
    "role_of",
]
