"""The scenario file: a plant, faults, a scripted human, and what must happen.

A scenario is YAML validated by :class:`Scenario`; :func:`load_scenario` raises ConfigError
naming the file, line and field of the first problem. Times are plant seconds from the start
of the run. Example::

    name: pump-cavitation
    seed: 7
    duration_s: 1500
    faults:
      - {type: cavitation, device: pump1, at: 600}
    expect:
      detected_within_s: 60
      root_cause: cavitation
      actions_executed: [{device: pump1, command: set_speed}]
      resolved_within_s: 600
      escalated: false
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from plantcrew.detect.config import MonitorConfig
from plantcrew.errors import ConfigError
from plantcrew.plant.csv_replay import PRESETS, CsvLayout, CsvReplayError, CsvSourceSpec
from plantcrew.plant.spec import FaultSpec, PlantSpec, check_faults, default_plant
from plantcrew.settings import config_error, line_of, load_yaml_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApprovalMatch(_Strict):
    """Which approval requests a scripted person answers (all given fields must match)."""

    command: str | None = None
    device: str | None = None
    hazard_class: int | None = Field(None, ge=0, le=3)


class HumanRule(_Strict):
    """A scripted person: answers matching approval requests ``after_s`` plant seconds later."""

    match: ApprovalMatch = ApprovalMatch()
    decision: Literal["approve", "reject", "ignore"]
    after_s: float = Field(30.0, ge=0)
    approver: str = Field(min_length=1)
    role: str = Field(min_length=1)
    reason: str = ""


class ActionExpectation(_Strict):
    """An action on ``device`` with ``command`` (and, if given, these parameter values)."""

    device: str
    command: str
    parameters: dict[str, Any] | None = None


class Expectations(_Strict):
    """What must hold at the end of the run; each given field is one expectation."""

    incidents: int | None = Field(None, ge=0, description="exact number of incidents")
    fault_at_s: float | None = Field(
        None, ge=0, description="fault onset when the fault is in replayed data, not in faults"
    )
    detected_within_s: float | None = Field(None, gt=0, description="from the first fault")
    root_cause: str | None = None
    actions_executed: list[ActionExpectation] | None = None
    actions_blocked: list[ActionExpectation] | None = None
    approved_by: list[str] | None = Field(None, description="people whose approval was given")
    resolved_within_s: float | None = Field(None, gt=0, description="from the first fault")
    escalated: bool | None = None
    escalation_reason_contains: str | None = Field(None, min_length=1)


class CsvTelemetry(CsvLayout):
    """Replay a CSV export (a historian dump, a SKAB file) instead of the simulator.

    The layout fields are :class:`~plantcrew.plant.csv_replay.CsvLayout`'s (``sep``,
    ``decimal``, ``thousands``, ``encoding``, ``timestamp_column``, ``timestamp_format``,
    ``timezone``, ``sample_period_s``, ``columns``). ``preset`` (``skab``) gives them all; a
    field given beside it overrides the preset's (``columns`` replaces its columns), and
    ``device_id`` names the device of the preset's columns. Without a preset, ``columns`` is
    required.

    ``path`` may use ``${PLANTCREW_DATA_DIR}`` (default: ``../shared/data`` from the working
    directory); a relative path is taken from the scenario file's folder.
    """

    source: Literal["csv"] = "csv"
    preset: str | None = None
    path: str = Field(min_length=1)
    device_id: str | None = Field(None, min_length=1, description="the preset's device")

    @model_validator(mode="before")
    @classmethod
    def _preset_fills_in(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
            return data
        layout = PRESETS.get(data["preset"])
        if layout is None:  # refused on the field below, not also as 'columns: Field required'
            return {"columns": {"-": {"device_id": "-", "sensor": "-"}}, **data}
        device = data.get("device_id")
        given = layout(device) if isinstance(device, str) and device else layout()
        return {**given, **data}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; known: {', '.join(sorted(PRESETS))}")
        return v

    @field_validator("device_id")
    @classmethod
    def _for_a_preset(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and "preset" in info.data and info.data["preset"] is None:
            raise ValueError(
                "names the device of a preset's columns; without a preset give each column "
                "its device_id under columns"
            )
        return v

    def spec(self, path: Path) -> CsvSourceSpec:
        """The replay spec of this telemetry for the file at ``path`` (resolved)."""
        return CsvSourceSpec(
            path=path, **{name: getattr(self, name) for name in CsvLayout.model_fields}
        )


class Scenario(_Strict):
    """One scenario file (see module doc)."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    duration_s: float = Field(1800.0, gt=0, le=7 * 24 * 3600)
    dt_s: float = Field(1.0, gt=0, le=60)
    plant: PlantSpec = Field(default_factory=default_plant)
    faults: list[FaultSpec] = []
    telemetry: CsvTelemetry | None = None
    monitor: dict[str, Any] = Field(default_factory=dict, description="MonitorConfig overrides")
    policies: str | None = Field(None, description="policies file instead of config/policies.yaml")
    human: list[HumanRule] = []
    expect: Expectations = Expectations()

    @property
    def first_fault_at(self) -> float | None:
        """Plant seconds of the earliest fault (``expect.fault_at_s`` for replayed data)."""
        if self.expect.fault_at_s is not None:
            return self.expect.fault_at_s
        return min((f.at for f in self.faults), default=None)


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file; ConfigError names file, line and field."""
    text = _read(path)
    try:
        scenario = load_yaml_model(path, Scenario, text=text)
    except ConfigError as exc:
        raise _plant_field(exc, text) from None
    try:
        check_faults(scenario.plant, scenario.faults)
        check_timeline(scenario)
    except ConfigError as exc:
        raise ConfigError(
            exc.reason, source=str(path), field=exc.field, line=line_of(text, exc.field or "")
        ) from None
    try:  # the overrides are applied when the run builds its Monitor: check them now
        MonitorConfig.model_validate(scenario.monitor)
    except ValidationError as exc:
        raise config_error(exc, source=str(path), text=text, at=("monitor",)) from None
    return scenario


_PLANT_PATH = re.compile(r"Value error, (devices\.\d+\.[\w.]+): (.*)", re.DOTALL)


def _plant_field(exc: ConfigError, text: str) -> ConfigError:
    """``exc`` located at the field a PlantSpec validator names at the start of its message
    (``devices.0.outlet_valve: ...``; pydantic puts it at ``plant.devices`` or ``plant``)."""
    match = _PLANT_PATH.fullmatch(exc.reason)
    if exc.field not in ("plant", "plant.devices") or match is None:
        return exc
    field = f"plant.{match.group(1)}"
    parts = field.split(".")
    while len(parts) > 3 and line_of(text, ".".join(parts)) is None:
        parts.pop()  # a default value (not in the file): the line of what holds it
    line = line_of(text, ".".join(parts))
    if line is None:
        return exc
    return ConfigError(match.group(2), source=exc.source, field=field, line=line)


def check_timeline(scenario: Scenario) -> None:
    """Refuse what a run of ``scenario`` could never check: a fault (or ``expect.fault_at_s``)
    at or after the run's end (never injected: ``incidents: 0`` passed), a delay expectation
    with no fault to measure from (it measured from t=0), and expectations that cannot hold
    together (``incidents: 0`` with one that needs an incident; ``escalated: false`` with
    ``escalation_reason_contains``).

    Raises ConfigError whose ``field`` is the dotted path (``faults.<i>.at``,
    ``expect.<name>``) of the first problem.
    """
    end, exp = scenario.duration_s, scenario.expect
    late = [(f"faults.{i}.at", f.at) for i, f in enumerate(scenario.faults)]
    if exp.fault_at_s is not None:
        late.append(("expect.fault_at_s", exp.fault_at_s))
    for field, at in late:
        if at >= end:
            raise ConfigError(
                f"the fault at {at:g} s starts at or after the run's end (duration_s "
                f"{end:g}): it would never happen",
                field=field,
            )
    if scenario.first_fault_at is None:
        for name in ("detected_within_s", "resolved_within_s"):
            if getattr(exp, name) is not None:
                raise ConfigError(
                    "is measured from the first fault and the scenario has no fault (add one "
                    "under faults, or expect.fault_at_s for a fault in replayed data)",
                    field=f"expect.{name}",
                )
    if exp.incidents == 0:
        needs_one = [
            name
            for name, wanted in exp
            if name not in ("incidents", "fault_at_s")
            and wanted is not None
            and wanted is not False
            and wanted != []
        ]
        if needs_one:
            raise ConfigError(
                "can never hold with incidents: 0 (it needs an incident)",
                field=f"expect.{needs_one[0]}",
            )
    if exp.escalated is False and exp.escalation_reason_contains is not None:
        raise ConfigError(
            "can never hold with escalated: false (only an escalated incident has a reason)",
            field="expect.escalation_reason_contains",
        )


def missing_file(scenario_path: str | Path, field: str, path: Path, hint: str = "") -> ConfigError:
    """The error for a file that the scenario's ``field`` names and that does not exist: it
    names the scenario file, the field's line, and the path looked for (after
    :func:`resolve_data_path`)."""
    text = _read(scenario_path)
    return ConfigError(
        f"file {path} not found" + (f" ({hint})" if hint else ""),
        source=str(scenario_path),
        field=field,
        line=line_of(text, field),
    )


def located_in_scenario(scenario_path: str | Path, exc: CsvReplayError) -> CsvReplayError:
    """``exc``, raised reading the telemetry file with its ``field`` a layout field (e.g.
    ``timestamp_format``), located at ``telemetry.<field>`` of the scenario file (or at
    ``telemetry:`` when a preset gave the field); the CSV file and line stay in the message.
    Any other error is returned as it is."""
    if exc.field not in CsvLayout.model_fields:
        return exc
    field = f"telemetry.{exc.field}"
    where = f"{exc.source}:{exc.line}" if exc.line else str(exc.source)
    return CsvReplayError(
        f"{where}: {exc.reason}",
        source=str(scenario_path),
        field=field,
        line=line_of(_read(scenario_path), field),
    )


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None


def resolve_data_path(raw: str, scenario_path: str | Path) -> Path:
    """Expand ``${PLANTCREW_DATA_DIR}`` and make ``raw`` absolute from the scenario's folder."""
    data_dir = os.environ.get("PLANTCREW_DATA_DIR", str(Path.cwd().parent / "shared" / "data"))
    expanded = raw.replace("${PLANTCREW_DATA_DIR}", data_dir)
    p = Path(expanded)
    return p if p.is_absolute() else (Path(scenario_path).parent / p).resolve()
