"""The SKAB harness on the shared files (skipped without ../shared/data)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from plantcrew.detect import confusion
from plantcrew.scenarios.skab_eval import evaluate_skab, load_truth, run_skab_file, skab_truth
from tests.conftest import require_shared_data


@pytest.fixture(scope="module")
def skab():
    return require_shared_data() / "skab"


def test_truth_from_folder_and_name(tmp_path):
    from pathlib import Path

    assert skab_truth(Path("x/valve1/3.csv")) == "inlet_valve_closure"
    assert skab_truth(Path("x/valve2/0.csv")) == "outlet_valve_closure"
    assert skab_truth(Path("x/other/12.csv")) == "cavitation"
    assert skab_truth(Path("x/anomaly-free/anomaly-free.csv")) is None
    t = tmp_path / "truth.csv"
    t.write_text("file,root_cause\nmine.csv,cavitation\n")
    assert load_truth(t) == {"mine.csv": "cavitation"}


def test_per_file_predictions_and_metrics_are_consistent(skab, tmp_path):
    files = [skab / "valve1" / "1.csv", skab / "other" / "6.csv"]
    out = tmp_path / "eval.json"
    report = evaluate_skab(files, json_out=out)
    data = json.loads(out.read_text())
    assert [f["name"] for f in data["files"]] == ["valve1/1.csv", "other/6.csv"]
    for entry, path in zip(data["files"], files, strict=True):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter=";"))
        flags, scores = entry["predictions"]["flag"], entry["predictions"]["score"]
        assert len(flags) == len(scores) == len(rows)
        assert set(flags) <= {0, 1} and all(0 <= s <= 1 for s in scores)
        assert not any(flags[:400]), "rows 0-399 only calibrate"
        truth = [int(float(r["anomaly"])) for r in rows]
        c = confusion(truth, flags, start=400)
        assert entry["metrics"]["confusion"] == {"tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn}
    assert data["overall"]["confusion"]["tp"] == report.overall.tp
    assert report.files[0].incidents_opened >= 1, "the inlet valve closure is detected"


def _resolving(path, **kw):
    """A pipeline that reports its file's resolved path, as the whole-crew pipeline does."""
    return run_skab_file(Path(path).resolve(), **kw)


@pytest.mark.parametrize("pipeline", [run_skab_file, _resolving])
def test_leave_one_out_recalls_the_same_fault_from_another_file(
    skab, tmp_path, monkeypatch, pipeline
):
    """Two recordings of one fault: each recalls the other's confirmed lesson, not its own,
    also when the files are given by relative paths and the pipeline resolves them."""
    twins = []
    for name in ("a.csv", "b.csv"):
        target = tmp_path / "valve2" / name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(skab / "valve2" / "0.csv", target)
        twins.append(target.relative_to(tmp_path))
    monkeypatch.chdir(tmp_path)
    files = [*twins, skab / "other" / "6.csv"]
    plain = evaluate_skab(files, pipeline=pipeline)
    loo = evaluate_skab(files, leave_one_out=True, pipeline=pipeline)
    assert plain.memory_lessons == 0 and loo.memory_lessons == 3
    assert [f.flags for f in plain.files] == [f.flags for f in loo.files], (
        "memory never changes detection"
    )
    for result in loo.files[:2]:
        fault = next(i for i in result.incidents if i.root_cause == result.diagnosed)
        assert any("recalls 1 confirmed" in e for e in fault.evidence), fault.evidence
        assert result.diagnosed == "outlet_valve_closure"
    assert loo.files[2].diagnosed == plain.files[2].diagnosed == "rotor_imbalance", (
        "an unlike lesson is not recalled"
    )


def test_memory_from_other_files(skab):
    report = evaluate_skab([skab / "valve1" / "0.csv"], memory_from=[skab / "valve1" / "3.csv"])
    assert report.memory_lessons == 1


def test_fault_beginning_inside_the_calibration_rows_is_found_once(skab):
    """other/2.csv: the fluid leak starts at row 104, right after a 247 s pause in the
    recording, inside rows 0-399 that calibrate; it still yields exactly one incident, whose
    first flagged reading follows the changepoint within seconds."""
    report = evaluate_skab([skab / "other" / "2.csv"])
    result = report.files[0]
    assert result.incidents_opened == len(result.incidents) == 1
    incident = result.incidents[0]
    assert incident.opened_row < 400, "reported while calibrating, not after"
    assert result.delay_s is not None and 0 <= result.delay_s <= 15
    assert result.confusion.tp > 0, "the fault's test rows are flagged too"


def test_eval_through_the_crew_matches_the_monitor_and_opens_crew_incidents(skab, tmp_path):
    """The crew pipeline (a scenario replaying the file, Coordinator, Diagnostic, database)
    flags the same rows as the Monitor alone, and its incidents come from the crew."""
    from plantcrew.scenarios.skab_crew import run_skab_file_crew

    files = [skab / "other" / "2.csv"]
    crew = evaluate_skab(files, pipeline=run_skab_file_crew)
    alone = evaluate_skab(files)
    assert crew.files[0].flags == alone.files[0].flags
    assert crew.files[0].scores == alone.files[0].scores
    assert crew.files[0].incidents_opened == 1
    incident = crew.files[0].incidents[0]
    assert incident.opened_row == alone.files[0].incidents[0].opened_row
    assert incident.first_flag_ts == alone.files[0].incidents[0].first_flag_ts
    assert incident.root_cause and incident.deviations, "diagnosed by the crew's Diagnostic"


@pytest.fixture(scope="module")
def whole_subset(skab):
    return evaluate_skab([skab])


def test_each_fault_is_one_incident(whole_subset):
    """Debounce, hysteresis and cooldown keep each labelled fault to one incident: in every
    fault file exactly one incident's first flagged reading lies inside the fault segment."""
    for result in whole_subset.files:
        if not result.labelled:
            continue
        with open(result.path, newline="") as fh:
            fault = [
                i for i, r in enumerate(csv.DictReader(fh, delimiter=";")) if r["anomaly"][0] == "1"
            ]
        starts = [inc.first_flag_row for inc in result.incidents]
        inside = [r for r in starts if r is not None and fault[0] <= r <= fault[-1]]
        assert len(inside) == 1, (result.name, fault[0], fault[-1], starts)


def test_issue_target_one_incident_per_fault_file(whole_subset):
    """Issue 3: exactly one incident on every fault file. valve1/2.csv's motor is still
    cooling when calibration ends (rows 340-521); it settles instead of opening a second
    incident before the fault."""
    counts = {r.name: r.incidents_opened for r in whole_subset.files if r.labelled}
    assert len(counts) == 10 and all(n == 1 for n in counts.values()), counts


@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 3): a 1.5-2 noise-sd step of one accelerometer at row ~600 of "
    "anomaly-free.csv opens an incident that lasts to the end; as strong as the weakest "
    "valve fault's (valve1/2.csv), so no general rule tells them apart",
)
def test_issue_target_no_incident_on_anomaly_free(whole_subset):
    counts = {r.name: r.incidents_opened for r in whole_subset.files}
    assert counts["anomaly-free/anomaly-free.csv"] == 0


def test_issue_targets_detection_and_delay(whole_subset):
    """Issue 3: F1 >= 0.80 with FAR <= 15 % (pooled), median delay under 15 s; the delay comes
    from the change alarms' row flags, the incidents themselves open later."""
    o = whole_subset.overall
    assert o.f1 >= 0.80 and o.far <= 15.0, (o.f1, o.far)
    assert whole_subset.median_delay_s is not None and whole_subset.median_delay_s < 15
    labelled = [r for r in whole_subset.files if r.labelled]
    assert any(
        r.flag_delay_s is not None
        and (r.incident_delay_s is None or r.flag_delay_s < r.incident_delay_s)
        for r in labelled
    )
    assert all(
        r.delay_s == min(d for d in (r.flag_delay_s, r.incident_delay_s) if d is not None)
        for r in labelled
        if r.delay_s is not None
    )
