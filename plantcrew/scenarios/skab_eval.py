"""Evaluate the Monitor's detection and the Diagnostic's root cause on SKAB files.

For each file, :func:`run_skab_file` (the per-file pipeline; the crew's scenario runner can
replace it, see ``pipeline=``) replays the CSV through a :class:`DeviceMonitor`, ranks root
causes for every anomaly it opens, and keeps one flag and one score per data row.
:func:`evaluate_skab` scores them with SKAB's formulas (F1, FAR, MAR, one confusion pooled over
the labelled files; :mod:`plantcrew.detect.metrics`) over rows 400 onward and, as SKAB's
leaderboard counts them, over every row (``leaderboard``), adds detection
delay from the first changepoint, incidents opened, and the diagnosis against the truth (from
SKAB's folder and file name, or a ``--truth`` file), and can write everything as JSON.

Detection delay is measured to the first detection at or after the first changepoint: the
episode's first reading over the alarm level (``AnomalyDetected.ts``, the time the crew records
as ``detected_at``; ``incident_delay_s``) or a row flag raised there (a change alarm,
``flag_delay_s``; a flag already up at the changepoint does not count), whichever comes first
(``delay_s``). The Monitor emits the event ``summary_s`` plus the debounce after the episode's
first reading, and that report delay is given too (``report_delay_s``).

Memory: ``memory_from`` files are run first without memory; each fault they detect becomes a
confirmed Lesson (true root cause + deviation signature) recalled for the evaluated files.
A ``.jsonl`` path there is read as saved lessons. ``leave_one_out=True`` gives each file the
lessons of all the other evaluated files.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plantcrew.detect import (
    UNKNOWN,
    Confusion,
    DeviceMonitor,
    Lesson,
    LessonMemory,
    MonitorConfig,
    SignatureBook,
    confusion,
    default_signatures_path,
    detection_delay,
    load_signatures,
    pooled,
    raised_at,
    rank_root_causes,
    signature_of,
    skab_rates,
)
from plantcrew.detect.yamlio import read_yaml
from plantcrew.errors import ConfigError
from plantcrew.messages import AnomalyCleared, AnomalyDetected, Deviation
from plantcrew.plant.csv_replay import SKAB_COLUMNS, CsvReplaySource, skab_preset
from plantcrew.scenarios.workers import worker_pool

TEST_START_ROW = 400
"""SKAB's protocol: rows 0-399 of each file may calibrate, the rest is the test set."""

DEFAULT_MIN_CONFIDENCE = 0.5

# SKAB v0.9 (github.com/waico/SKAB, data/README): folder valve1 = inlet valve closed, valve2 =
# outlet valve closed; other/N as listed in its data README.
SKAB_OTHER = {
    **dict.fromkeys((1, 2, 3, 4), "fluid_leak_or_addition"),
    **dict.fromkeys((5, 6, 7, 8, 9), "rotor_imbalance"),
    **dict.fromkeys((10, 11), "circuit_water_increase"),
    **dict.fromkeys((12, 13), "cavitation"),
    14: "hot_water_supply",
}


def skab_truth(path: Path) -> str | None:
    """The true root cause of a SKAB file from its folder and name; None when unknown."""
    folder = path.parent.name
    if folder == "valve1":
        return "inlet_valve_closure"
    if folder == "valve2":
        return "outlet_valve_closure"
    if folder == "other" and path.stem.isdigit():
        return SKAB_OTHER.get(int(path.stem))
    return None


def load_truth(path: Path | str, *, known: Iterable[str] | None = None) -> dict[str, str]:
    """Read a truth file: JSON or YAML ``{"file name or path": "root_cause"}`` (``.json``,
    ``.yaml``, ``.yml``), else CSV ``file,root_cause`` (an optional ``file,root_cause``
    header, ``#`` comments). A file is matched by its path, ``folder/name`` or name.

    ``known``, when given, is the set of root causes a row may name. Raises ConfigError naming
    the file, line and field of the first bad row: unreadable or invalid file, a missing file
    or root cause, a file given twice, a root cause not in ``known``.
    """
    path = Path(path)
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=src) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text file (cannot decode as UTF-8)", source=src) from None
    rows: list[tuple[int | None, str, str, str]] = []  # line, file, root cause, field
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"invalid JSON: {exc.msg}", source=src, line=exc.lineno) from None
            try:
                lines = read_yaml(path)[1]
            except ConfigError:  # JSON that YAML does not read: no line numbers
                lines = {}
        else:
            data, lines = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping of file -> root cause", source=src, line=1)
        for key, value in data.items():
            name = str(key)
            if not isinstance(value, str):
                raise ConfigError(
                    "expected a root cause (a string)", source=src, line=lines.get(name), field=name
                )
            rows.append((lines.get(name), name, value.strip(), name))
    else:
        for no, row in enumerate(csv.reader(text.splitlines()), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if no == 1 and cells[:2] == ["file", "root_cause"]:
                continue
            if len(cells) > 2:
                raise ConfigError(
                    f"expected 'file,root_cause', got {len(cells)} fields", source=src, line=no
                )
            if not cells[0]:
                raise ConfigError("missing", source=src, line=no, field="file")
            if len(cells) < 2 or not cells[1]:
                raise ConfigError("missing", source=src, line=no, field="root_cause")
            rows.append((no, cells[0], cells[1], "root_cause"))
    allowed = set(known) if known is not None else None
    truth: dict[str, str] = {}
    for line, name, cause, fld in rows:
        if not cause:
            raise ConfigError("missing root cause", source=src, line=line, field=fld)
        if allowed is not None and cause not in allowed:
            raise ConfigError(
                f"unknown root cause {cause!r}; known: {', '.join(sorted(allowed))}",
                source=src,
                line=line,
                field=fld,
            )
        if name in truth:
            raise ConfigError(f"{name!r} already given", source=src, line=line, field="file")
        truth[name] = cause
    return truth


def _truth_keys(path: Path) -> tuple[str, ...]:
    """The keys a truth file may give ``path`` under: its path, ``folder/name``, its name."""
    return (str(path), f"{path.parent.name}/{path.name}", path.name)


def _truth_for(path: Path, truth: dict[str, str] | None) -> str | None:
    if truth:
        for key in _truth_keys(path):
            if key in truth:
                return truth[key]
    return skab_truth(path)


def _name(path: Path) -> str:
    """How a file is named in the report: ``folder/name`` (``name`` with no folder)."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def check_skab_file(path: Path) -> list[str]:
    """The header of the SKAB file at ``path``, checked before anything is run.

    Raises ConfigError naming the file and line 1 when it cannot be read, is not text, or
    lacks SKAB's ``;``-separated ``datetime`` and sensor columns (saying so when the header
    would have them with another separator).
    """
    src = str(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=src) from None
    except UnicodeDecodeError:
        raise ConfigError(
            "not a text CSV file (cannot decode as UTF-8)", source=src, line=1
        ) from None
    needed = ["datetime", *SKAB_COLUMNS]

    def split(sep: str) -> list[str]:
        return [h.strip() for h in next(csv.reader([first], delimiter=sep), [])]

    header = split(";")
    missing = [c for c in needed if c not in header]
    if not missing:
        return header
    for sep in (",", "\t"):
        if all(c in split(sep) for c in needed):
            raise ConfigError(
                f"the header is {sep!r}-separated; SKAB files are ';'-separated", source=src, line=1
            )
    raise ConfigError(
        f"not a SKAB file: no column(s) {', '.join(repr(c) for c in missing)} in the header "
        f"(SKAB's are {';'.join(needed)}; 'anomaly' and 'changepoint' label it)",
        source=src,
        line=1,
    )


# ---- per-file pipeline ------------------------------------------------------------------


@dataclass
class Incident:
    """One anomaly episode and its diagnosis (rows are 0-based data rows).

    ``opened_row``/``opened_ts``: where the AnomalyDetected event was emitted;
    ``first_flag_ts``/``first_flag_row``: the episode's first flagged reading.
    """

    opened_row: int
    opened_ts: float
    first_flag_ts: float
    cleared_row: int | None
    cleared_ts: float | None
    root_cause: str
    confidence: float
    evidence: list[str]
    candidates: list[dict[str, Any]]
    deviations: list[dict[str, Any]]
    first_flag_row: int | None = None


@dataclass
class FileResult:
    """Everything measured on one file; ``flags``/``scores`` have one entry per data row.

    ``incidents_opened`` counts, on a labelled file, every incident (its fault may begin
    inside the calibration rows), on an unlabelled one those opened on the test rows; the
    delays are measured from the first changepoint: ``incident_delay_s`` and
    ``report_delay_s`` to the first incident whose first flagged reading is at or after it,
    ``flag_delay_s`` to the first row flag raised at or after it, ``delay_s`` the earlier.
    """

    path: str
    name: str
    truth: str | None
    labelled: bool
    rows: int
    skipped_rows: int
    flags: list[int]
    scores: list[float]
    incidents: list[Incident]
    confusion: Confusion
    delay_s: float | None
    report_delay_s: float | None
    incidents_opened: int
    diagnosed: str | None
    correct: bool | None
    fault_deviations: list[dict[str, Any]] = field(default_factory=list)
    incident_delay_s: float | None = None
    flag_delay_s: float | None = None
    confusion_all: Confusion = field(default_factory=Confusion)

    def metrics(self) -> dict[str, Any]:
        """The file's metrics as plain JSON-able values: F1, FAR and MAR over the test rows
        (None where undefined, :func:`~plantcrew.detect.metrics.skab_rates`) and, under
        ``leaderboard``, over every row as SKAB's leaderboard counts them."""
        return {
            **self._rates(self.confusion),
            "confusion": asdict(self.confusion),
            "leaderboard": {
                **self._rates(self.confusion_all),
                "confusion": asdict(self.confusion_all),
            },
            "delay_s": self.delay_s,
            "incident_delay_s": self.incident_delay_s,
            "flag_delay_s": self.flag_delay_s,
            "report_delay_s": self.report_delay_s,
            "incidents_opened": self.incidents_opened,
            "truth": self.truth,
            "diagnosed": self.diagnosed,
            "correct": self.correct,
        }

    def _rates(self, c: Confusion) -> dict[str, float | None]:
        rates = skab_rates(c)
        return rates if self.labelled else {**rates, "f1": None, "mar_pct": None}


class FilePipeline(Protocol):
    """The per-file pipeline :func:`evaluate_skab` calls (replaceable by the crew runner)."""

    def __call__(
        self,
        path: Path,
        *,
        config: MonitorConfig,
        signatures: SignatureBook,
        lessons: list[Lesson],
        truth: str | None,
        min_confidence: float,
    ) -> FileResult: ...


@dataclass
class _Labels:
    anomaly: list[int]
    changepoint_row: int | None
    labelled: bool


def _read_labels(path: Path, rows: int) -> _Labels:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = [h.strip() for h in next(reader, [])]
        if "anomaly" not in header:
            return _Labels([0] * rows, None, False)
        ai = header.index("anomaly")
        ci = header.index("changepoint") if "changepoint" in header else None
        anomaly, cp = [], None
        for i, fields in enumerate(reader):
            try:
                anomaly.append(1 if float(fields[ai]) >= 0.5 else 0)
                if cp is None and ci is not None and float(fields[ci]) >= 0.5:
                    cp = i
            except (ValueError, IndexError):
                anomaly.append(0)
    anomaly = (anomaly + [0] * rows)[:rows]
    return _Labels(anomaly, cp, True)


def _dev_dict(d: Deviation) -> dict[str, Any]:
    return d.model_dump()


def run_skab_file(
    path: Path,
    *,
    config: MonitorConfig,
    signatures: SignatureBook,
    lessons: list[Lesson],
    truth: str | None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> FileResult:
    """Replay one SKAB file through a DeviceMonitor and rank root causes per incident.

    The diagnosis names the top candidate when its score reaches ``min_confidence``, else
    ``unknown`` (as the Diagnostic's playbook model does). Raises CsvReplayError for a file
    that cannot be read.
    """
    source = CsvReplaySource(skab_preset(path))
    monitor = DeviceMonitor("pump1", config)
    flags: dict[int, int] = {}
    scores: dict[int, float] = {}
    row_ts: dict[int, float] = {}
    incidents: list[Incident] = []
    last_row = -1
    for batch in source:
        row = batch.row if batch.row is not None else last_row + 1
        last_row = row
        verdict = monitor.update(batch)
        flags[row], scores[row], row_ts[row] = int(verdict.flag), verdict.score, verdict.ts
        event = verdict.event
        if isinstance(event, AnomalyDetected):
            incidents.append(_diagnose(event, row, verdict.ts, signatures, lessons, min_confidence))
        elif isinstance(event, AnomalyCleared) and incidents and incidents[-1].cleared_row is None:
            incidents[-1].cleared_row, incidents[-1].cleared_ts = row, event.ts
    return file_result(path, truth, flags, scores, row_ts, incidents, source)


def file_result(
    path: Path,
    truth: str | None,
    flags: dict[int, int],
    scores: dict[int, float],
    row_ts: dict[int, float],
    incidents: list[Incident],
    source: CsvReplaySource,
) -> FileResult:
    """Score one replayed file: per-row ``flags``/``scores`` and plant times ``row_ts`` (by
    0-based data row), its ``incidents`` in order, and the ``source`` that read it."""
    rows = source.rows_read
    labels = _read_labels(path, rows)
    row_of = {ts: row for row, ts in sorted(row_ts.items(), reverse=True)}
    for inc in incidents:
        inc.first_flag_row = row_of.get(inc.first_flag_ts)
    flag_list = [flags.get(i, 0) for i in range(rows)]
    score_list = [round(scores.get(i, 0.0), 6) for i in range(rows)]
    conf = confusion(labels.anomaly, flag_list, start=TEST_START_ROW)
    cp_ts = row_ts.get(labels.changepoint_row) if labels.changepoint_row is not None else None
    test = [inc for inc in incidents if inc.opened_row >= TEST_START_ROW]
    # a fault may begin inside the calibration rows: its incident counts wherever it opens
    seen = incidents if labels.labelled else test
    incident_delay = detection_delay(cp_ts, [inc.first_flag_ts for inc in seen])
    flag_delay = detection_delay(
        cp_ts, raised_at(flag_list, [row_ts.get(i, -math.inf) for i in range(rows)])
    )
    found = [d for d in (incident_delay, flag_delay) if d is not None]
    delay = min(found) if found else None
    first = next((inc for inc in seen if cp_ts is not None and inc.first_flag_ts >= cp_ts), None)
    report_delay = None if first is None or cp_ts is None else first.opened_ts - cp_ts
    fault = _fault_incident(seen, labels)
    diagnosed = fault.root_cause if fault else None
    correct = None if truth is None else (diagnosed == truth)
    return FileResult(
        path=str(path),
        name=_name(path),
        truth=truth,
        labelled=labels.labelled,
        rows=rows,
        skipped_rows=source.skipped,
        flags=flag_list,
        scores=score_list,
        incidents=incidents,
        confusion=conf,
        delay_s=delay,
        report_delay_s=report_delay,
        incidents_opened=len(seen),
        diagnosed=diagnosed,
        correct=correct,
        fault_deviations=fault.deviations if fault else [],
        incident_delay_s=incident_delay,
        flag_delay_s=flag_delay,
        confusion_all=confusion(labels.anomaly, flag_list),
    )


def _diagnose(
    event: AnomalyDetected,
    row: int,
    ts: float,
    signatures: SignatureBook,
    lessons: list[Lesson],
    min_confidence: float,
) -> Incident:
    ranked = rank_root_causes(event.deviations, signatures, lessons)
    top = ranked[0]
    cause = top.root_cause if top.score >= min_confidence else UNKNOWN
    return Incident(
        opened_row=row,
        opened_ts=ts,
        first_flag_ts=event.ts,
        cleared_row=None,
        cleared_ts=None,
        root_cause=cause,
        confidence=top.score,
        evidence=top.evidence,
        candidates=[c.model_dump() for c in ranked[:3]],
        deviations=[_dev_dict(d) for d in event.deviations],
    )


def _fault_incident(incidents: Sequence[Incident], labels: _Labels) -> Incident | None:
    """The incident that detected the labelled fault: the first opened inside the segment."""
    for inc in incidents:
        if 0 <= inc.opened_row < len(labels.anomaly) and labels.anomaly[inc.opened_row]:
            return inc
    return None


# ---- whole evaluation -------------------------------------------------------------------


@dataclass
class EvalReport:
    """Per-file results and the pooled figures over the labelled files."""

    files: list[FileResult]
    overall: Confusion
    median_delay_s: float | None
    median_report_delay_s: float | None
    diagnosed_right: int
    diagnosed_total: int
    memory_lessons: int
    leave_one_out: bool
    wall_s: float
    leaderboard: Confusion = field(default_factory=Confusion)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data (per file: predictions, incidents, metrics)."""
        return {
            "protocol": {"test_start_row": TEST_START_ROW, "metric": "SKAB outlier (binary)"},
            "overall": {
                **skab_rates(self.overall),
                "confusion": asdict(self.overall),
                "leaderboard": {
                    **skab_rates(self.leaderboard),
                    "confusion": asdict(self.leaderboard),
                },
                "median_delay_s": self.median_delay_s,
                "median_report_delay_s": self.median_report_delay_s,
                "diagnosed_right": self.diagnosed_right,
                "diagnosed_total": self.diagnosed_total,
                "memory_lessons": self.memory_lessons,
                "leave_one_out": self.leave_one_out,
                "wall_s": self.wall_s,
            },
            "files": [
                {
                    "path": f.path,
                    "name": f.name,
                    "rows": f.rows,
                    "skipped_rows": f.skipped_rows,
                    "predictions": {"flag": f.flags, "score": f.scores},
                    "incidents": [asdict(i) for i in f.incidents],
                    "metrics": f.metrics(),
                }
                for f in self.files
            ],
        }


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """CSV files named or found (recursively, sorted) under the given folders.

    Raises ConfigError for a path that does not exist and for a folder with no ``.csv`` file.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.csv") if q.is_file())
            if not found:
                raise ConfigError("no .csv file in this folder", source=str(p))
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError("no such file or folder", source=str(p))
    return out


def lesson_of(result: FileResult) -> Lesson | None:
    """The confirmed lesson of a file whose fault was detected and whose truth is known."""
    if not result.truth or not result.fault_deviations:
        return None
    sig = signature_of(result.fault_deviations)
    return Lesson(root_cause=result.truth, signature=sig, source="confirmed") if sig else None


def lessons_from(results: Iterable[FileResult]) -> list[Lesson]:
    """Confirmed lessons of every file in ``results`` that has one (see :func:`lesson_of`)."""
    return [lesson for r in results if (lesson := lesson_of(r)) is not None]


def evaluate_skab(
    paths: Sequence[Path | str],
    *,
    memory_from: Sequence[Path | str] = (),
    truth: Path | str | dict[str, str] | None = None,
    json_out: Path | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    config: MonitorConfig | None = None,
    signatures: SignatureBook | Path | str | None = None,
    leave_one_out: bool = False,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    pipeline: FilePipeline = run_skab_file,
    jobs: int = 1,
    warn: Callable[[str], None] | None = None,
) -> EvalReport:
    """Run and score every SKAB file of ``paths`` (files or folders); see the module docstring.

    ``progress(name, done, total)`` is called as each file is done, ``done`` files before
    it in its pass; the passes before the scored one (``--memory-from`` files, leave-one-out's
    first) prefix ``name`` with ``"memory: "`` and ``"leave-one-out pass 1/2: "``.
    ``pipeline`` runs one file (:func:`run_skab_file`, the Monitor and the ranking alone, or
    :func:`plantcrew.scenarios.skab_crew.run_skab_file_crew`, the whole crew); ``jobs`` > 1
    runs that many files at once in worker processes. Every file is checked before any is
    run: ConfigError for a missing path, a folder with no ``.csv`` file, a file that is not
    SKAB's (:func:`check_skab_file`) or a bad truth/signature/lesson file (a truth row naming
    a root cause the signatures do not know, too). ``warn(text)`` is told, before the run, of
    labelled files with no truth (their diagnosis is not scored) and of truth entries that
    match no evaluated file.
    """
    started = time.perf_counter()
    config = config or MonitorConfig()
    book = (
        signatures
        if isinstance(signatures, SignatureBook)
        else load_signatures(signatures or default_signatures_path())
    )
    known = set(book.signatures) | {UNKNOWN}
    truth_map = (
        truth if isinstance(truth, dict) else (load_truth(truth, known=known) if truth else None)
    )
    files = expand_paths(paths)
    mem_paths = [Path(p) for p in memory_from]
    mem_csv = expand_paths(p for p in mem_paths if p.suffix != ".jsonl")
    headers = {path: check_skab_file(path) for path in [*files, *mem_csv]}
    if warn is not None:
        _warn_truth(files, headers, truth, truth_map, warn)

    def run_all(paths: list[Path], lessons: list[list[Lesson]], label: str) -> list[FileResult]:
        calls = [
            dict(
                config=config,
                signatures=book,
                lessons=les,
                truth=_truth_for(path, truth_map),
                min_confidence=min_confidence,
            )
            for path, les in zip(paths, lessons, strict=True)
        ]
        return _map(pipeline, paths, calls, jobs, progress, label)

    memory: list[Lesson] = []
    for p in mem_paths:
        if p.suffix == ".jsonl":
            memory.extend(LessonMemory.load(p))
    memory.extend(lessons_from(run_all(mem_csv, [[] for _ in mem_csv], "memory: ")))

    own: list[Lesson | None] = [None for _ in files]  # each file's lesson, by position
    if leave_one_out:
        plain = run_all(files, [memory for _ in files], "leave-one-out pass 1/2: ")
        own = [lesson_of(r) for r in plain]  # ``run_all`` keeps the order of ``files``
    per_file = [
        memory + [les for j, les in enumerate(own) if les is not None and j != i]
        for i in range(len(files))
    ]
    results = run_all(files, per_file, "")

    labelled = [r for r in results if r.labelled]
    delays = [r.delay_s for r in labelled if r.delay_s is not None]
    reported = [r.report_delay_s for r in labelled if r.report_delay_s is not None]
    judged = [r for r in results if r.correct is not None]
    report = EvalReport(
        files=results,
        overall=pooled(r.confusion for r in labelled),
        leaderboard=pooled(r.confusion_all for r in labelled),
        median_delay_s=statistics.median(delays) if delays else None,
        median_report_delay_s=statistics.median(reported) if reported else None,
        diagnosed_right=sum(1 for r in judged if r.correct),
        diagnosed_total=len(judged),
        memory_lessons=len(memory) + sum(1 for les in own if les is not None),
        leave_one_out=leave_one_out,
        wall_s=time.perf_counter() - started,
    )
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    return report


def _warn_truth(
    files: list[Path],
    headers: dict[Path, list[str]],
    source: Path | str | dict[str, str] | None,
    truth: dict[str, str] | None,
    warn: Callable[[str], None],
) -> None:
    """Tell ``warn`` which labelled files have no truth and which truth entries match none."""
    untold = [_name(f) for f in files if "anomaly" in headers[f] and _truth_for(f, truth) is None]
    if untold:
        n = len(untold)
        warn(
            f"no root-cause truth for {n} file{'s' if n > 1 else ''} ({', '.join(untold)}): "
            "the diagnosis is not scored there; give --truth FILE (file,root_cause)"
        )
    if truth:
        used = {key for f in files for key in _truth_keys(f)}
        unused = [key for key in truth if key not in used]
        if unused:
            name = "the truth" if isinstance(source, dict) else Path(str(source)).name
            n = len(unused)
            warn(f"{name} names {n} file{'s' if n > 1 else ''} not evaluated: {', '.join(unused)}")


def _map(
    pipeline: FilePipeline,
    paths: list[Path],
    calls: list[dict[str, Any]],
    jobs: int,
    progress: Callable[[str, int, int], None] | None,
    label: str = "",
) -> list[FileResult]:
    """``pipeline(path, **call)`` for each file, in order; ``jobs`` > 1 runs that many
    processes at once, the largest files first. ``progress(label + name, k, n)`` is called
    as each file is done (``k`` files were done before it)."""
    n = len(paths)

    def done(i: int, k: int) -> None:
        if progress:
            progress(label + _name(paths[i]), k, n)

    if jobs <= 1 or n <= 1:
        out = []
        for i, (path, call) in enumerate(zip(paths, calls, strict=True)):
            out.append(pipeline(path, **call))
            done(i, i)
        return out
    order = sorted(range(n), key=lambda i: -paths[i].stat().st_size)
    with worker_pool(min(jobs, n)) as pool:
        futures = {pool.submit(pipeline, paths[i], **calls[i]): i for i in order}
        for k, future in enumerate(as_completed(futures)):
            future.result()  # a failed file stops the run here
            done(futures[future], k)
        return [future.result() for future in sorted(futures, key=futures.__getitem__)]


# ---- rendering --------------------------------------------------------------------------


def render_report(report: EvalReport, console: Any = None) -> None:
    """Print the report as a rich table (per file, then overall) to ``console``."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    title = "SKAB outlier detection (test rows 400+)" + (
        " - leave-one-out memory" if report.leave_one_out else ""
    )
    table = Table(title=title)
    cols = ("file", "F1", "FAR %", "MAR %", "delay s (event)", "incidents", "truth", "diagnosed")
    for col in cols:
        table.add_column(col, justify="left" if col in ("file", "truth", "diagnosed") else "right")

    def rates(c: Confusion, labelled: bool = True) -> list[str]:
        got = skab_rates(c)
        shown = [("f1", ".2f"), ("far_pct", ".1f"), ("mar_pct", ".1f")]
        return [
            "-" if got[k] is None or (k != "far_pct" and not labelled) else format(got[k], f)
            for k, f in shown
        ]

    for r in report.files:
        mark = "" if r.correct is None else (" ✓" if r.correct else " ✗")
        table.add_row(
            Text(r.name),
            *rates(r.confusion, r.labelled),
            "-" if r.delay_s is None else f"{r.delay_s:.0f} ({r.report_delay_s:.0f})",
            str(r.incidents_opened),
            Text(r.truth or "-"),
            Text((r.diagnosed or "-") + mark),
        )
    delay = (
        "-"
        if report.median_delay_s is None
        else f"{report.median_delay_s:.0f} ({report.median_report_delay_s:.0f}) median"
    )
    table.add_row(
        "overall (labelled, pooled)",
        *rates(report.overall),
        delay,
        str(sum(r.incidents_opened for r in report.files)),
        "",
        f"{report.diagnosed_right}/{report.diagnosed_total} right",
        style="bold",
    )
    table.add_row("SKAB leaderboard (every row)", *rates(report.leaderboard), "", "", "", "")
    console.print(table)
    console.print(
        f"{len(report.files)} files, {report.memory_lessons} lessons from memory, "
        f"{report.wall_s:.1f} s"
    )
