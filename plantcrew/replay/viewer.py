"""Stepping through a run in the terminal, and following a live one.

:class:`Stepper` is the step-through state (which message, which view) and renders it with
rich; :func:`interactive` drives it from single key presses:

- ``n`` / → / space: next message; ``p`` / ←: previous; ``g``: go to message ``#SEQ``;
- ``j``: jump to an incident (its first message); ``i``: next incident;
- ``s``: the message's payload; ``m``: the model calls behind it (prompt and response,
  tokens, latency, cost); ``t``: its summary with timings, tool calls (actions) and results
  (actuator receipts) and approvals; ``q``: quit.

:func:`follow` polls the store for a run's new messages until the run is no longer running.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Literal

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from plantcrew.replay.describe import fmt_plant_time
from plantcrew.replay.errors import ReplayError
from plantcrew.replay.timeline import Step, Timeline, Usage, records_after, step_of
from plantcrew.store import Store

View = Literal["summary", "payload", "model"]
KEYS = (
    "n next  p previous  g go to #  j jump to incident  i next incident  "
    "s payload  m model calls  t summary  q quit"
)
PROMPT_CHARS = 4000


class Stepper:
    """Step-through state over ``steps`` of ``timeline`` (see module doc)."""

    def __init__(self, timeline: Timeline, steps: Sequence[Step] | None = None) -> None:
        self.timeline = timeline
        self.steps = list(timeline.steps if steps is None else steps)
        self.pos = 0
        self.view: View = "summary"
        self.note = ""

    @property
    def current(self) -> Step | None:
        return self.steps[self.pos] if self.steps else None

    def move(self, delta: int) -> None:
        """Go ``delta`` messages forward (negative: back), staying in range."""
        if not self.steps:
            return
        new = min(max(self.pos + delta, 0), len(self.steps) - 1)
        self.note = (
            ""
            if new != self.pos
            else ("at the last message" if delta > 0 else "at the first message")
        )
        self.pos = new

    def goto(self, seq: int) -> None:
        """Go to the message with log number ``seq`` (if it is among the steps shown)."""
        for i, s in enumerate(self.steps):
            if s.seq == seq:
                self.pos, self.note = i, ""
                return
        self.note = f"message #{seq} is not shown"

    def jump(self, incident: str) -> None:
        """Go to the first message of an incident (id, prefix or number)."""
        try:
            inc = self.timeline.incident(incident)
        except ReplayError as exc:
            self.note = str(exc)
            return
        for i, s in enumerate(self.steps):
            if s.incident_id == inc.id:
                self.pos, self.note = i, f"incident {inc.id}"
                return
        self.note = f"incident {inc.id} has no message shown"

    def next_incident(self) -> None:
        """Go to the first message of the next incident after the current one."""
        cur = self.current.incident_id if self.current else None
        seen = {cur}
        for i in range(self.pos + 1, len(self.steps)):
            inc = self.steps[i].incident_id
            if inc and inc not in seen:
                self.pos, self.note = i, f"incident {inc}"
                return
        self.note = "no later incident"

    def handle(self, key: str, arg: str | None = None) -> bool:
        """Apply a key (with ``arg`` for ``g``/``j``); False when the key quits."""
        if key in ("q", "\x03", "\x04"):
            return False
        if key in ("n", " ", "right", "down"):
            self.move(1)
        elif key in ("p", "left", "up"):
            self.move(-1)
        elif key == "g" and arg:
            if arg.lstrip("#").isdigit():
                self.goto(int(arg.lstrip("#")))
            else:
                self.note = f"not a message number: {arg!r}"
        elif key == "j" and arg:
            self.jump(arg)
        elif key == "i":
            self.next_incident()
        elif key == "s":
            self.view = "payload"
        elif key == "m":
            self.view = "model"
        elif key == "t":
            self.view = "summary"
        else:
            self.note = f"keys: {KEYS}"
        return True

    # ---- rendering --------------------------------------------------------------------------
    def render(self) -> RenderableType:
        """The screen: where we are, the message, the chosen view, the keys."""
        run = self.timeline.run
        s = self.current
        if s is None:
            return Text(f"run {run.id}: no messages match")
        prev = self.steps[self.pos - 1] if self.pos > 0 else None
        delta = s.plant_time - prev.plant_time if prev else 0.0
        head = Text.assemble(
            ("plantcrew replay ", "bold green"),
            f"{run.id} ({run.scenario})  ",
            (f"message {self.pos + 1}/{len(self.steps)}", "bold"),
            f"  #{s.seq}  plant time {fmt_plant_time(s.plant_time)} (+{delta:g} s)",
            f"  incident {s.incident_id}" if s.incident_id else "",
        )
        line = Text.assemble(
            (s.source, "cyan"),
            " → ",
            (s.receiver, "magenta"),
            "  ",
            (s.type, "bold"),
            "  ",
            s.summary,
        )
        body = {"summary": self._summary, "payload": self._payload, "model": self._model}[
            self.view
        ](s)
        foot = Text(self.note or KEYS, style="yellow" if self.note else "dim")
        return Group(head, line, Panel(body, title=self.view, border_style="blue"), foot)

    def _summary(self, s: Step) -> RenderableType:
        tbl = Table.grid(padding=(0, 2))
        tbl.add_column(style="dim")
        tbl.add_column()
        tbl.add_row("id", Text(s.id))
        tbl.add_row("subject", Text(s.subject))
        tbl.add_row("time", Text(s.time))
        cause = next((x for x in self.timeline.steps if x.id == s.causation_id), None)
        tbl.add_row(
            "caused by",
            Text(
                f"#{cause.seq} {cause.type} from {cause.source}"
                if cause
                else (s.causation_id or "-")
            ),
        )
        u = s.usage
        if u.calls:
            tbl.add_row("model calls", _usage_text(u))
        for a in self.timeline.actions_of(s):
            tbl.add_row(
                "action",
                Text(
                    f"{a.command} {a.device_id} {a.parameters} [{a.status}] class {a.hazard_class}"
                ),
            )
            if a.receipt:
                tbl.add_row("receipt", Text(json.dumps(a.receipt, default=str)))
        for ap in self.timeline.approvals_of(s):
            who = (
                ", ".join(
                    f"{d.get('approver')} ({'yes' if d.get('approved') else 'no'})"
                    for d in ap.decisions
                )
                or "-"
            )
            tbl.add_row("approval", Text(f"{ap.id} {ap.status}; decisions: {who}"))
        return tbl

    def _payload(self, s: Step) -> RenderableType:
        return Text(
            json.dumps(s.body.get("payload", {}), indent=2, ensure_ascii=False, default=str)
        )

    def _model(self, s: Step) -> RenderableType:
        if not s.model_calls:
            return Text("no model calls behind this message", style="dim")
        parts: list[RenderableType] = []
        for n, c in enumerate(s.model_calls, 1):
            flags = [f for f in ("fallback", "repaired") if c.get(f)]
            if not c.get("ok", True):
                flags.append("failed")
            if c.get("degraded_reason"):
                flags.append(f"degraded: {c['degraded_reason']}")
            parts.append(
                Text.assemble(
                    (
                        f"{n}. {c.get('model_group')} / {c.get('deployment')} ({c.get('model')})",
                        "bold",
                    ),
                    f"  {_usage_text(Usage.of([c]))}",
                    (f"  [{', '.join(flags)}]" if flags else "", "yellow"),
                )
            )
            if c.get("error"):
                parts.append(Text(f"error: {c['error']}", style="red"))
            for m in c.get("prompt") or []:
                content = m.get("content")
                text = content if isinstance(content, str) else json.dumps(content)
                if len(text) > PROMPT_CHARS:
                    text = text[:PROMPT_CHARS] + f"… ({len(text)} characters)"
                parts.append(Text.assemble((f"{m.get('role')}: ", "cyan"), text))
            parts.append(Text.assemble(("response: ", "green"), str(c.get("response") or "")))
        return Group(*parts)


def _usage_text(u: Usage) -> str:
    return (
        f"{u.calls} call(s), {u.prompt_tokens}+{u.completion_tokens} tokens, "
        f"{u.latency_ms:.1f} ms, ${u.cost_usd:.6f}"
    )


def read_key() -> str:
    """One key press from the terminal (arrow keys as ``left``/``right``/``up``/``down``)."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        ch = sys.stdin.read(1)
        if ch == "\x1b":
            seq = sys.stdin.read(2)
            return {"[A": "up", "[B": "down", "[C": "right", "[D": "left"}.get(seq, "")
        return ch
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def interactive(
    console: Console,
    stepper: Stepper,
    key: Callable[[], str] = read_key,
    ask: Callable[[str], str] | None = None,
) -> None:
    """Show ``stepper`` and apply key presses until ``q``."""
    asker = ask or (lambda prompt: console.input(prompt))
    while True:
        console.clear()
        console.print(stepper.render())
        k = key()
        arg = None
        if k == "g":
            arg = asker("go to message #: ").strip()
        elif k == "j":
            arg = asker("incident (id or number): ").strip()
        if not stepper.handle(k, arg):
            return


def follow(
    store: Store,
    run_id: str,
    emit: Callable[[Step], None],
    *,
    poll_s: float = 0.5,
    keep: Callable[[Step], bool] = lambda s: True,
) -> int:
    """Emit each message of run ``run_id`` as it is logged (those ``keep`` accepts), until
    the run is no longer ``running`` and nothing new came; returns how many were emitted.

    Raises NotFoundError when the run does not exist."""
    last, index, emitted = 0, 0, 0
    while True:
        status = store.get_run(run_id).status
        records = records_after(store, run_id, last)
        if records:
            incidents = {i.id for i in store.incidents(run_id)}
            for r in records:
                step = step_of(index, r, incidents, {})
                index += 1
                last = r.seq or last
                if keep(step):
                    emit(step)
                    emitted += 1
            continue
        if status != "running":
            return emitted
        time.sleep(poll_s)


__all__ = ["KEYS", "Stepper", "follow", "interactive", "read_key"]
