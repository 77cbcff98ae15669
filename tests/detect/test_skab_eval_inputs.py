"""``plantcrew eval skab`` and ``plantcrew detect`` on a user's own files: bad paths, folders
with nothing to score, files that are not SKAB's (or NAB's), truth files with bad rows. Each
is one clear error (file, line, field) and exit 2, found before any file is run."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.detect import confusion, pooled
from plantcrew.errors import ConfigError
from plantcrew.scenarios.skab_eval import evaluate_skab, load_truth, run_skab_file
from tests.conftest import require_shared_data

HEADER = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint"
)


def cli(*args: str | Path):
    """The real ``plantcrew`` command, run in this process as a user would run it."""
    return CliRunner().invoke(app, [str(a) for a in args])


def skab_like(path: Path, sep: str = ";") -> Path:
    """A header and one reading in SKAB's columns (enough for checks made before a run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = "2020-03-09 10:14:33;0.02;0.04;1.3;0.05;71.2;25.0;219.7;32.0;0;0"
    path.write_text((HEADER + "\n" + row + "\n").replace(";", sep), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["/nonexistent/skab"],
        ["SKAB", "--truth", "/nonexistent/truth.csv"],
        ["SKAB", "--memory-from", "/nonexistent/memory"],
    ],
    ids=["path", "truth", "memory-from"],
)
def test_a_missing_path_is_told_before_the_crew_is_imported(tmp_path, args):
    """A typo in a path costs a second, not the seconds that importing the crew takes
    (litellm, scikit-learn): exit 2 naming the path, with neither imported."""
    data = skab_like(tmp_path / "skab" / "1.csv")
    argv = ["plantcrew", "eval", "skab", *[str(data) if a == "SKAB" else a for a in args]]
    probe = (
        "import sys\n"
        f"sys.argv = {argv!r}\n"
        "from plantcrew.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'litellm' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.stdout.split() == ["exit", "2", "False", "False"], done.stdout + done.stderr
    assert "/nonexistent/" in done.stderr and "does not exist" in done.stderr, done.stderr


def test_a_folder_with_no_csv_file_is_an_error_not_an_empty_report(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("nothing to score")
    for folder in ("empty", "docs"):
        res = cli("eval", "skab", tmp_path / folder, "--monitor-only")
        assert res.exit_code == 2, res.stdout + res.stderr
        assert f"{folder}: no .csv file in this folder" in res.stderr
        assert "overall" not in res.stdout


def test_a_binary_file_is_one_error_line_not_a_traceback(tmp_path):
    data = tmp_path / "image.csv"
    data.write_bytes(b"\x89PNG\r\n\x1a\n\xd0\xff\xfe" * 50)
    res = cli("eval", "skab", data, "--monitor-only")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "image.csv:1: not a text CSV file" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_a_comma_separated_file_is_named_with_its_separator_before_any_file_runs(tmp_path):
    good, bad = skab_like(tmp_path / "a" / "good.csv"), skab_like(tmp_path / "b" / "bad.csv", ",")
    res = cli("eval", "skab", good, bad, "--monitor-only", "--jobs", "1")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "bad.csv:1: the header is ','-separated; SKAB files are ';'-separated" in res.stderr
    assert "good.csv" not in res.stderr, "checked before the first file ran"


def test_a_csv_with_other_columns_names_the_missing_ones(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("datetime;Current;Pressure\n2020-03-09 10:14:33;1.3;0.05\n")
    res = cli("eval", "skab", other, "--monitor-only")
    assert res.exit_code == 2
    assert "other.csv:1: not a SKAB file: no column(s) 'Accelerometer1RMS'" in res.stderr


def truth_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        (
            "t1.csv",
            "file,root_cause\na.csv,cavitation\nb.csv\n",
            "t1.csv:3 field 'root_cause': missing",
        ),
        (
            "t2.csv",
            "file,root_cause\na.csv,cavitatoin\n",
            "t2.csv:2 field 'root_cause': unknown root cause",
        ),
        ("t3.csv", " ,cavitation\n", "t3.csv:1 field 'file': missing"),
        (
            "t4.csv",
            "a.csv,cavitation\na.csv,rotor_imbalance\n",
            "t4.csv:2 field 'file': 'a.csv' already given",
        ),
        (
            "t5.json",
            '{\n "a.csv": "cavitation",\n "b.csv": "rotr"\n}\n',
            "t5.json:3 field 'b.csv': unknown root cause",
        ),
    ],
)
def test_truth_file_rows_are_checked_with_file_line_and_field(tmp_path, name, text, error):
    path = truth_file(tmp_path, name, text)
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_truth(path, known={"cavitation", "rotor_imbalance", "unknown"})


def test_truth_file_in_yaml_as_the_help_says(tmp_path):
    yml = truth_file(
        tmp_path, "truth.yaml", "# mine\na.csv: cavitation\nb/c.csv: rotor_imbalance\n"
    )
    assert load_truth(yml) == {"a.csv": "cavitation", "b/c.csv": "rotor_imbalance"}
    bad = truth_file(tmp_path, "bad.yml", "a.csv: cavitation\nb.csv: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.yml:2 field 'b.csv': expected a root cause"):
        load_truth(bad)


def test_cli_truth_typo_is_exit_2_before_any_file_runs(tmp_path):
    data = skab_like(tmp_path / "mine" / "run.csv")
    truth = truth_file(tmp_path, "truth.csv", "run.csv,inlet_valve_closur\n")
    res = cli("eval", "skab", data, "--truth", truth, "--monitor-only")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "truth.csv:1 field 'root_cause': unknown root cause 'inlet_valve_closur'" in res.stderr


def test_files_without_truth_and_truth_rows_matching_no_file_are_named(tmp_path):
    skab = require_shared_data() / "skab"
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(skab / "valve1" / "1.csv", mine / "run_a.csv")
    res = cli("eval", "skab", mine, "--monitor-only")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "warning: no root-cause truth for 1 file (mine/run_a.csv)" in res.stderr
    assert "give --truth FILE" in res.stderr
    truth = truth_file(
        tmp_path, "truth.csv", "run_a.csv,inlet_valve_closure\nrun_z.csv,cavitation\n"
    )
    res = cli("eval", "skab", mine, "--monitor-only", "--truth", truth)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "no root-cause truth" not in res.stderr
    assert "warning: truth.csv names 1 file not evaluated: run_z.csv" in res.stderr
    assert "1/1 right" in res.stdout


def test_detect_nab_on_a_folder_with_no_category_files_is_an_error(tmp_path):
    root = tmp_path / "NAB"
    (root / "data" / "realTweets").mkdir(parents=True)
    (root / "data" / "realTweets" / "x.csv").write_text("timestamp,value\n2020-01-01 00:00:00,1\n")
    res = cli("detect", "--format", "nab", root, "--out", tmp_path / "results")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "NAB: no <category>/<file>.csv in this folder; did you mean" in res.stderr
    assert str(root / "data") in res.stderr
    (tmp_path / "empty").mkdir()
    res = cli("detect", "--format", "nab", tmp_path / "empty", "--out", tmp_path / "results")
    assert res.exit_code == 2 and "no <category>/<file>.csv" in res.stderr


def test_detect_nab_on_a_binary_file_is_one_error_line(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "x.csv").write_bytes(b"\xd0\xff\xfe\x00" * 40)
    res = cli("detect", "--format", "nab", tmp_path / "data", "--out", tmp_path / "results")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "x.csv:1: not a text CSV file" in res.stderr


def _marking(path, **kw):
    """A pipeline (importable, for worker processes) that leaves ``<file>.done`` when done."""
    result = run_skab_file(path, **kw)
    Path(f"{path}.done").touch()
    return result


def short_skab_files(tmp_path: Path, n: int = 3, folder: str = "f") -> list[Path]:
    """``n`` copies of the first 460 rows of a shared SKAB fault file (calibration + a bit)."""
    lines = (require_shared_data() / "skab" / "valve1" / "1.csv").read_text().splitlines()
    out = []
    for i in range(n):
        path = tmp_path / f"{folder}{i}" / f"{i}.csv"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(lines[:461]) + "\n")
        out.append(path)
    return out


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_reports_each_file_when_it_is_done_in_every_pass(tmp_path, jobs):
    """Progress on a long run: a line per finished file (with jobs > 1 every line used to
    come at once before anything ran), the leave-one-out and memory passes included (they
    used to run with no progress at all)."""
    files = short_skab_files(tmp_path)
    memory = short_skab_files(tmp_path, 1, folder="m")
    seen: list[tuple[str, int, int]] = []

    def progress(name: str, i: int, n: int) -> None:
        file = name.rsplit(" ", 1)[-1]
        done = [p for p in [*files, *memory] if p.parent.name + "/" + p.name == file]
        assert done and Path(f"{done[0]}.done").exists(), f"{name} reported before it ran"
        for p in done:
            Path(f"{p}.done").unlink()
        seen.append((name, i, n))

    evaluate_skab(
        files, memory_from=memory, leave_one_out=True, pipeline=_marking, jobs=jobs,
        progress=progress,
    )  # fmt: skip
    assert [(i, n) for _, i, n in seen] == [(0, 1), *[(i, 3) for i in range(3)] * 2]
    assert seen[0][0] == "memory: m0/0.csv"
    assert {s[0] for s in seen[1:4]} == {f"leave-one-out pass 1/2: f{i}/{i}.csv" for i in range(3)}
    assert {s[0] for s in seen[4:]} == {f"f{i}/{i}.csv" for i in range(3)}


def relabelled(tmp_path: Path, name: str, label: int, rows: int = 460) -> Path:
    """The first ``rows`` rows of a shared SKAB file with every ``anomaly`` set to ``label``."""
    lines = (require_shared_data() / "skab" / "valve1" / "1.csv").read_text().splitlines()
    body = [";".join([*ln.split(";")[:-2], str(label), "0"]) for ln in lines[1 : rows + 1]]
    path = tmp_path / "mine" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([lines[0], *body]) + "\n")
    return path


def test_rates_skab_cannot_compute_are_null_not_zero(tmp_path):
    """SKAB's F1, FAR and MAR divide by zero on a file with no anomaly rows (MAR, and F1 with
    no alarm) or only anomaly rows (FAR): 'no value', not a perfect 0 % or an F1 of 0."""
    normal, faulty = relabelled(tmp_path, "normal.csv", 0), relabelled(tmp_path, "all.csv", 1)
    out = tmp_path / "eval.json"
    evaluate_skab([normal, faulty], json_out=out, truth={"normal.csv": "unknown"})
    files = {f["name"]: f["metrics"] for f in json.loads(out.read_text())["files"]}
    assert files["mine/normal.csv"]["confusion"]["fp"] == 0, "calm rows: no alarm"
    assert files["mine/normal.csv"]["mar_pct"] is None
    assert files["mine/normal.csv"]["f1"] is None
    assert files["mine/normal.csv"]["far_pct"] == 0.0
    assert files["mine/all.csv"]["far_pct"] is None
    assert files["mine/all.csv"]["mar_pct"] == 100.0


def test_leaderboard_figures_count_every_row_as_skab_does(tmp_path):
    """SKAB's notebooks fit on rows 0-399 but score every row of each file (chp_score over
    df.anomaly); the report's leaderboard block does that, the rest counts rows 400 on."""
    skab = require_shared_data() / "skab"
    out = tmp_path / "eval.json"
    files = [skab / "other" / "2.csv", skab / "valve1" / "1.csv"]
    report = evaluate_skab(files, json_out=out)
    data = json.loads(out.read_text())
    every = []
    for entry, path in zip(data["files"], files, strict=True):
        with path.open(newline="") as fh:
            truth = [int(float(r["anomaly"])) for r in csv.DictReader(fh, delimiter=";")]
        every.append(confusion(truth, entry["predictions"]["flag"]))
        assert entry["metrics"]["leaderboard"]["confusion"] == asdict(every[-1])
    pooled_all = pooled(every)
    board = data["overall"]["leaderboard"]
    assert board["confusion"] == asdict(pooled_all)
    assert board["f1"] == pytest.approx(pooled_all.f1)
    assert board["far_pct"] == pytest.approx(pooled_all.far)
    assert board["mar_pct"] == pytest.approx(pooled_all.mar)
    assert data["overall"]["confusion"] == asdict(report.overall), "test rows unchanged"
    assert board["confusion"] != data["overall"]["confusion"]
