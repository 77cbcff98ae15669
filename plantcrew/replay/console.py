"""Rich renderables of what replay reports: timelines, verify and fork reports, run diffs.

What a run recorded (agent names, message types, field paths, values) is shown as it is, as
``Text``, never read as rich markup (see :mod:`plantcrew.terminal`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from plantcrew.replay.describe import fmt_plant_time
from plantcrew.replay.timeline import Step

if TYPE_CHECKING:
    from plantcrew.replay.diff import RunDiff
    from plantcrew.replay.rerun import ForkReport
    from plantcrew.replay.verify import VerifyReport

SUMMARY_CHARS = 48
OP_STYLE = {
    "same": ("=", "dim"),
    "changed": ("~", "yellow"),
    "removed": ("-", "red"),
    "added": ("+", "green"),
}


def timeline_table(steps: Sequence[Step]) -> Table:
    """A run's conversation: #, plant time, sender → receiver, type, one-line summary."""
    tbl = Table(show_lines=False)
    for col in ("#", "plant time", "from", "to", "type", "summary"):
        tbl.add_column(col, overflow="fold")
    for s in steps:
        tbl.add_row(
            str(s.seq),
            fmt_plant_time(s.plant_time),
            Text(s.source),
            Text(s.receiver),
            Text(s.type),
            Text(s.summary),
        )
    return tbl


def step_line(s: Step) -> Text:
    """One line of a followed run: plant time, sender → receiver, type, summary."""
    return Text.assemble(
        (f"{fmt_plant_time(s.plant_time)} ", "dim"),
        (f"#{s.seq:<4} ", "dim"),
        (f"{s.source:>14}", "cyan"),
        " → ",
        (f"{s.receiver:<12} ", "magenta"),
        (f"{s.type:<18} ", "bold"),
        s.summary,
    )


def verify_report(r: VerifyReport) -> RenderableType:
    """What ``replay --verify`` prints."""
    rx = r.reexecution
    lines: list[RenderableType] = []
    head = Text.assemble(
        ("verify ", "bold"),
        r.run_id,
        f": {r.compared} messages of {len(r.agents)} agents "
        f"compared with a re-execution ({r.replayed} messages",
        f", cut at plant time {fmt_plant_time(rx.stop_at)}" if rx.stop_at is not None else "",
        f") in {r.wall_s:.1f} s",
    )
    lines.append(head)
    lines.append(
        Text(
            f"model calls: {rx.served} answered from the record, {rx.refused} failed as recorded, "
            f"{rx.live} live (the playbook runs as code and is not counted)",
            style="dim",
        )
    )
    if r.ok:
        lines.append(Text("no divergence: every agent sent the same messages", "green bold"))
    elif r.first is None and not r.action_differences:
        lines.append(
            Text(
                "every agent sent the same messages, but the model calls differ from the record:",
                "red bold",
            )
        )
    if r.first is not None:
        d = r.first
        lines.append(Text("first divergence: ", "red bold") + Text(d.headline()))
        if d.differences:
            tbl = Table(show_lines=True)
            tbl.add_column("field", overflow="fold", min_width=24)
            tbl.add_column("recorded")
            tbl.add_column("re-executed")
            for f in d.differences:
                tbl.add_row(Text(f.path), Text(_show(f.original)), Text(_show(f.replayed)))
            lines.append(tbl)
        for other in r.divergences[1:]:
            lines.append(Text(f"also: {other.headline()}", "yellow"))
    for a in r.action_differences:
        lines.append(Text(f"tool result differs: {a}", "red"))
    for u in rx.unrecorded:
        lines.append(Text(f"no recorded answer: {u}", "red"))
    for u in rx.unused:
        lines.append(Text(f"recorded answer never asked for: {u}", "red"))
    return Group(*lines)


def _show(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def fork_report(r: ForkReport) -> RenderableType:
    """What ``rerun`` prints."""
    rx = r.reexecution
    changes = r.changes.to_json()
    what = ", ".join(f"{k}={v}" for k, v in changes.items() if v) or "nothing (a plain re-run)"
    lines: list[RenderableType] = [
        Text.assemble(
            ("fork ", "bold"),
            (r.run_id, "bold cyan"),
            f" of {r.parent_run_id} from message #{r.fork_seq} ({r.fork_from_message_id})",
        ),
        Text(f"changed: {what}"),
        Text(
            f"model calls: {rx.served} answered from the record (before the fork), "
            f"{rx.live} live; scenario expectations "
            f"{'passed' if rx.passed else 'failed'}; {rx.wall_s:.1f} s",
            style="dim",
        ),
    ]
    if r.prefix is None:
        lines.append(
            Text(f"the {r.prefix_messages} messages before the fork are as recorded", "green")
        )
    else:
        lines.append(
            Text("before the fork the re-run already differs: ", "yellow bold")
            + Text(r.prefix.describe())
        )
    lines.append(Text(f"compare: plantcrew diff {r.parent_run_id} {r.run_id}", "dim"))
    return Group(*lines)


def diff_report(d: RunDiff, *, changes_only: bool = False) -> RenderableType:
    """What ``diff`` prints: highlights, the aligned timelines, then each changed message's
    differing fields."""
    a, b = d.a.run.id, d.b.run.id
    parts: list[RenderableType] = [
        Text.assemble(("diff ", "bold"), f"A={a}  B={b}  ", (d.relation, "dim"))
    ]
    hl = Table("about", "what", "A", "B", title="highlights", title_justify="left")
    for h in d.highlights:
        if changes_only and (not h.differs or h.volatile):
            continue
        style = "yellow" if h.differs and not h.volatile else "dim"
        hl.add_row(
            Text(h.subject, style),
            Text(f"{h.category}: {h.name}", style),
            Text(h.a, style),
            Text(h.b, style),
        )
    parts.append(hl)
    tl = Table(
        "",
        "A/B #",
        "plant time",
        "from",
        "type",
        "summary",
        title="aligned timelines",
        title_justify="left",
    )
    details: list[RenderableType] = []
    for row in d.rows:
        if changes_only and row.op == "same":
            continue
        mark, style = OP_STYLE[row.op]
        step = row.a or row.b
        assert step is not None
        times = fmt_plant_time(step.plant_time)
        if row.a is not None and row.b is not None and row.a.plant_time != row.b.plant_time:
            times = f"{fmt_plant_time(row.a.plant_time)} → {fmt_plant_time(row.b.plant_time)}"
        group = row.group.replace("inc-<run>-", "incident ")
        a_seq, b_seq = (str(row.a.seq) if row.a else ""), (str(row.b.seq) if row.b else "")
        summary = (row.b or step).summary
        if len(summary) > SUMMARY_CHARS:
            summary = summary[: SUMMARY_CHARS - 1] + "…"
        tl.add_row(
            Text(mark, style),
            f"{a_seq or '-'}/{b_seq or '-'}",
            times,
            Text(step.source),
            Text(step.type),
            Text(summary, style),
        )
        if row.op == "changed":
            details.append(
                Text(f"~ {group} A #{a_seq} / B #{b_seq} {step.type} ({step.source})", "yellow")
            )
            details.extend(
                Text(f"    {f.path}: {_show(f.original)} → {_show(f.replayed)}")
                for f in row.differences
            )
    parts.append(tl)
    if details:
        parts.append(Text("changed messages", "bold"))
        parts.extend(details)
    counts = {op: sum(1 for r in d.rows if r.op == op) for op in OP_STYLE}
    parts.append(
        Text(", ".join(f"{n} {op}" for op, n in counts.items()), "green" if d.same else "yellow")
    )
    return Group(*parts)


__all__ = ["diff_report", "fork_report", "step_line", "timeline_table", "verify_report"]
