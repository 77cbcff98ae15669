"""Terminal rendering (rich) for the CLI: the live run view, run summaries, timelines.

Names from the scenario and the plant (devices, sensors, columns such as
'P-101 Durchfluss [m³/h]', expectation details) are shown as they are, never read as markup
(see :mod:`plantcrew.terminal`)."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from plantcrew.messages import Message, TelemetryBatch
from plantcrew.replay.describe import receiver_of, summarize
from plantcrew.scenarios.runner import RunResult


class LiveRunView:
    """The live view of ``plantcrew run``: plant time, readings, anomaly scores, messages."""

    def __init__(self, console: Console, scenario: str, duration_s: float) -> None:
        self.console, self.scenario, self.duration_s = console, scenario, duration_s
        self.t = 0.0
        self.readings: dict[str, dict[str, float]] = {}
        self.scores: dict[str, float] = {}
        self.lines: deque[Text] = deque(maxlen=14)
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)
        self._plain = not console.is_terminal

    def __enter__(self) -> LiveRunView:
        if not self._plain:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._plain:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def on_step(self, t: float, batches: list[TelemetryBatch], scores: dict[str, float]) -> None:
        self.t = t
        for b in batches:
            self.readings[b.device_id] = {r.sensor: r.value for r in b.readings}
        self.scores.update(scores)
        if not self._plain and int(t) % 5 == 0:
            self.live.update(self._render())

    def on_message(self, msg: Message) -> None:
        t = msg.time - msg.time.replace(hour=0, minute=0, second=0, microsecond=0)
        line = Text.assemble(
            (f"{_fmt_t(t.total_seconds())} ", "dim"),
            (f"{msg.source:>14}", "cyan"),
            " → ",
            (f"{receiver_of(msg.subject):<12} ", "magenta"),
            (f"{msg.type:<18} ", "bold"),
            summarize(msg.model_dump(mode="json")),
        )
        if self._plain:
            self.console.print(line, soft_wrap=True)
        else:
            self.lines.append(line)

    def _render(self) -> Group:
        head = Text.assemble(
            ("plantcrew ", "bold green"),
            f"{self.scenario}  plant time ",
            (_fmt_t(self.t), "bold"),
            f" / {_fmt_t(self.duration_s)}",
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        table.add_column("device")
        table.add_column("score", justify="right")
        table.add_column("readings")
        for dev, vals in sorted(self.readings.items()):
            score = self.scores.get(dev)
            style = "red bold" if score is not None and score >= 0.5 else "green"
            table.add_row(
                Text(dev),
                Text(f"{score:.2f}" if score is not None else "-", style=style),
                Text("  ".join(f"{k}={v:.3g}" for k, v in list(vals.items())[:9])),
            )
        return Group(
            head,
            table,
            Panel(
                Group(*self.lines) if self.lines else Text("…"),
                title="crew messages",
                border_style="blue",
            ),
        )


def _fmt_t(s: float) -> str:
    s = int(s)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def print_summary(console: Console, result: RunResult) -> None:
    """Each incident (root cause, actions, approvers, times) and each expectation."""
    console.rule(escape(f"run {result.run_id}: {result.scenario}"))
    if not result.incidents:
        console.print("no incidents")
    for inc in result.incidents:
        tbl = Table(
            title=escape(f"incident {inc['id']} on {inc['device_id']}: {inc['status']}"),
            show_header=False,
            title_justify="left",
            box=None,
        )
        tbl.add_row("root cause", Text(f"{inc['root_cause']} ({(inc['confidence'] or 0):.2f})"))
        tbl.add_row("detected at", _fmt_t(inc["detected_at"]))
        tbl.add_row("resolved at", _fmt_t(inc["resolved_at"]) if inc["resolved_at"] else "-")
        if inc["escalation_reason"]:
            tbl.add_row("escalated", Text(inc["escalation_reason"]))
        for a in inc["actions"]:
            who = ", ".join(a["approved_by"]) or "-"
            tbl.add_row(
                "action",
                Text(
                    f"{a['command']} {a['device_id']} {a['parameters']} "
                    f"[{a['status']}] class {a['hazard_class']}, approved by {who}"
                ),
            )
        for d in inc["degraded"]:
            tbl.add_row("degraded", Text(d))
        console.print(tbl)
    exp = Table(title="expectations", title_justify="left")
    exp.add_column("name")
    exp.add_column("result")
    exp.add_column("detail")
    for e in result.expectations:
        exp.add_row(
            Text(e.name),
            Text("pass", "green") if e.passed else Text("FAIL", "red bold"),
            Text(e.detail),
        )
    console.print(exp)
    verdict = Text("PASSED", "green bold") if result.passed else Text("FAILED", "red bold")
    console.print(verdict, f"{result.plant_seconds:.0f} plant s in {result.wall_seconds:.1f} s")
