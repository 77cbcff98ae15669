"""The HTML report of a run, rendered by headless Chromium: it shows every incident and agent.

Needs Chromium (``apt-get install -y chromium``); skipped without it, except under CI
(``CI=true``), where a missing browser fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plantcrew.cli_replay import app
from plantcrew.replay.timeline import load_timeline
from plantcrew.store import Store

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
APT = "apt-get update && apt-get install -y chromium"


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    msg = f"headless Chromium not found (tried {', '.join(BROWSERS)}); install it: {APT}"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def rendered_dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The DOM of ``page`` after its script ran, as headless Chromium serialises it."""
    proc = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_opens_offline_and_shows_every_incident_and_agent(
    short_run: tuple[str, str], tmp_path: Path
) -> None:
    db_url, run_id = short_run
    page = tmp_path / "report.html"
    res = CliRunner().invoke(
        app, ["replay", run_id, "--db", db_url, "--format", "html", "--out", str(page)]
    )
    assert res.exit_code == 0, res.output
    html = page.read_text()
    # self-contained: no external script, style, image or font
    assert not re.search(r"<(script|link|img)[^>]*\s(src|href)=", html)
    assert "http://" not in html.split('id="run-data"')[0]
    # the lanes and cards are built by the page's script: none are in the file itself
    assert 'data-agent="' not in html and 'data-incident="' not in html

    timeline = load_timeline(Store(db_url), run_id)
    dom = rendered_dom(page, tmp_path / "profile")
    lanes = re.findall(r'class="lane" data-agent="([^"]+)"', dom)
    assert lanes == timeline.agents
    cards = re.findall(r'class="incident" data-incident="([^"]+)"', dom)
    assert cards == [i.id for i in timeline.incidents] and cards
    rows = re.findall(r'<tr data-seq="(\d+)"', dom)
    assert [int(r) for r in rows] == [s.seq for s in timeline.steps]
    markers = re.findall(r'<button class="mk [a-z]+" data-seq="(\d+)"', dom)
    assert sorted(int(m) for m in markers) == [s.seq for s in timeline.steps]


def test_report_shows_a_messages_details_with_its_model_call(
    short_run: tuple[str, str], tmp_path: Path
) -> None:
    db_url, run_id = short_run
    timeline = load_timeline(Store(db_url), run_id)
    diagnosis = next(s for s in timeline.steps if s.type == "diagnosis.made")
    page = tmp_path / "report.html"
    res = CliRunner().invoke(
        app, ["replay", run_id, "--db", db_url, "--format", "html", "--out", str(page)]
    )
    assert res.exit_code == 0, res.output
    dom = rendered_dom(page, tmp_path / "profile", f"#m-{diagnosis.seq}")
    assert f'<h2 id="detail-title">#{diagnosis.seq} diagnosis.made</h2>' in dom
    assert f'<tr data-seq="{diagnosis.seq}" id="row-{diagnosis.seq}" class="selected">' in dom
    payload = re.search(r'<pre id="detail-payload">(.*?)</pre>', dom, re.S)
    assert payload is not None and diagnosis.payload["root_cause"] in payload.group(1)
    call = diagnosis.model_calls[0]
    assert f"{call['model_group']} / {call['deployment']}" in dom
    assert "You are the Diagnostic" in dom  # the prompt behind the answer
