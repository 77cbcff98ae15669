"""Evaluating a SKAB file through the whole crew (the per-file pipeline of ``eval skab``).

Each file becomes a scenario that replays it (CSV replay source, SKAB preset) as fast as
possible on the simulated clock, on the in-process bus with a fresh SQLite database in a
temporary folder: the Monitor agent detects, the Coordinator opens the incidents, the
Diagnostic names the root cause, and the rest of the crew responds as it would on a plant.
Lessons given to the pipeline are stored as the memory the Coordinator hands the Diagnostic.

The per-row flags and scores the leaderboard metrics need are not messages: a tap on the run
(its observer) feeds the same telemetry to a :class:`DeviceMonitor` with the same settings,
which is deterministic, and checks each score against the one the crew's Monitor reported
for that step (a mismatch raises EvalError). Incidents, their detection times and diagnoses
come from the crew's database.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import yaml

from plantcrew.detect import UNKNOWN, DeviceMonitor, Lesson, MonitorConfig
from plantcrew.errors import PlantcrewError
from plantcrew.messages import AnomalyCleared, AnomalyDetected, Message, TelemetryBatch
from plantcrew.plant.csv_replay import CsvReplaySource, skab_preset
from plantcrew.scenarios.runner import run_scenario
from plantcrew.scenarios.skab_eval import FileResult, Incident, file_result
from plantcrew.store import Store
from plantcrew.store.tables import Lesson as StoredLesson

DEVICE = "pump1"
MAX_DURATION_S = 7 * 24 * 3600.0


class EvalError(PlantcrewError):
    """The crew's Monitor and the evaluation's tap disagree about a reading's score."""


class _Tap:
    """The run's observer: per-row verdicts of a twin DeviceMonitor, checked against the crew."""

    def __init__(self, config: MonitorConfig) -> None:
        self.monitor = DeviceMonitor(DEVICE, config)
        self.flags: dict[int, int] = {}
        self.scores: dict[int, float] = {}
        self.row_ts: dict[int, float] = {}
        self.detected: dict[float, int] = {}  # AnomalyDetected.ts -> row it was emitted on
        self.cleared: list[tuple[int, float]] = []
        self._row = -1

    def on_step(self, t: float, batches: list[TelemetryBatch], scores: dict[str, float]) -> None:
        for batch in batches:
            row = batch.row if batch.row is not None else self._row + 1
            self._row = row
            v = self.monitor.update(batch)
            self.flags[row], self.scores[row], self.row_ts[row] = int(v.flag), v.score, v.ts
            if isinstance(v.event, AnomalyDetected):
                self.detected[v.event.ts] = row
            elif isinstance(v.event, AnomalyCleared):
                self.cleared.append((row, v.event.ts))
            crew = scores.get(batch.device_id)
            if crew is not None and abs(crew - v.score) > 1e-9:
                raise EvalError(
                    f"row {row}: the crew's Monitor scored {crew}, the evaluation's {v.score}"
                )

    def on_message(self, msg: Message) -> None:
        return None


def run_skab_file_crew(
    path: Path, *, config: MonitorConfig, lessons: list[Lesson], truth: str | None, **_: Any
) -> FileResult:
    """Run one SKAB file through the crew and score it (see the module docstring).

    A :class:`~plantcrew.scenarios.skab_eval.FilePipeline`: the crew diagnoses with the
    signatures and playbook of its config folder, so the ``signatures`` and
    ``min_confidence`` that the Monitor-only pipeline takes are ignored. Raises
    CsvReplayError for an unreadable file, EvalError when the tap and the crew disagree.
    """
    path = Path(path).resolve()
    with tempfile.TemporaryDirectory(prefix="plantcrew-skab-") as tmp:
        scenario = Path(tmp) / "scenario.yaml"
        scenario.write_text(
            yaml.safe_dump(
                {
                    "name": f"skab-eval-{path.parent.name}-{path.stem}",
                    "duration_s": MAX_DURATION_S,
                    "telemetry": {"source": "csv", "preset": "skab", "path": str(path)},
                    "monitor": config.model_dump(mode="json"),
                }
            ),
            encoding="utf-8",
        )
        db_url = f"sqlite:///{tmp}/eval.db"
        store = Store(db_url)
        for lesson in lessons:
            store.add_lesson(
                StoredLesson(
                    root_cause=lesson.root_cause,
                    signature=dict(lesson.signature),
                    source=lesson.source,
                    weight=lesson.weight,
                    note="eval memory",
                )
            )
        tap = _Tap(config)
        run = asyncio.run(run_scenario(scenario, db_url=db_url, observer=tap))
        incidents = [_incident(inc, tap) for inc in store.incidents(run.run_id)]
        store.engine.dispose()
    source = CsvReplaySource(skab_preset(path))
    for _batch in source:  # the row count and skipped rows of the file, as the run read it
        pass
    return file_result(path, truth, tap.flags, tap.scores, tap.row_ts, incidents, source)


def _incident(inc: Any, tap: _Tap) -> Incident:
    """A crew incident as the evaluation records it (rows from the tap's matching events)."""
    row = tap.detected.get(inc.detected_at, -1)
    cleared = next(((r, ts) for r, ts in tap.cleared if r > row >= 0), None)
    diagnosis = (inc.data or {}).get("diagnosis", {})
    deviations = (inc.anomaly or {}).get("deviations", [])
    return Incident(
        opened_row=row,
        opened_ts=tap.row_ts.get(row, inc.opened_at),
        first_flag_ts=inc.detected_at,
        cleared_row=cleared[0] if cleared else None,
        cleared_ts=cleared[1] if cleared else None,
        root_cause=inc.root_cause or UNKNOWN,
        confidence=float(inc.confidence or 0.0),
        evidence=list(diagnosis.get("evidence", [])),
        candidates=[],
        deviations=list(deviations),
    )
