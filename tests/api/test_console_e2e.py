"""The web console end to end, in headless Chromium: ``plantcrew serve --scenario`` hosts a
crew whose scripted person does not answer; a person signs in with an approver token, sees the
incident appear, clicks Approve, and the action runs (``executed`` in the database).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``); skipped without them, failed under CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import Store
from plantcrew.store.access import AccessStore
from tests.api.conftest import ROOT, SCENARIO, on_loopback

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if not missing:
        return
    msg = f"{', '.join(missing)} not found: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unanswered_scenario(tmp: Path) -> Path:
    """The approval scenario with nobody scripted to answer and a long approval timeout."""
    spec = yaml.safe_load(SCENARIO.read_text())
    spec.pop("human", None)
    spec.pop("expect", None)
    spec["duration_s"] = 4000
    spec["policies"] = "policies.yaml"
    policies = yaml.safe_load((ROOT / "config" / "policies.yaml").read_text())
    for cls in policies["approvals"]["classes"].values():
        cls["timeout_s"] = 3600
    (tmp / "policies.yaml").write_text(yaml.safe_dump(policies))
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Store]]:
    require_chromium()
    db_url = f"sqlite:///{tmp_path / 'console.db'}"
    store = Store(db_url)
    _, token = AccessStore(store).create_token(
        "alice", "approver", approver_role="shift_supervisor"
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantcrew.cli_serve",
            "serve",
            "--port",
            str(port),
            "--scenario",
            str(unanswered_scenario(tmp_path)),
            "--speed",
            "200",
            "--db",
            db_url,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PLANTCREW_LOG_JSON": "true"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/startupz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("plantcrew serve did not start within 60 s")
        yield base, token, store
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        store.dispose()


def browser(tmp: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_approval_given_in_the_console_lets_the_action_run(
    served: tuple[str, str, Store], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, token, store = served
    driver = browser(tmp_path)
    try:
        driver.get(f"{base}/console/")
        driver.find_element(By.ID, "token-input").send_keys(token)
        driver.find_element(By.ID, "sign-in").click()
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "alice"))
        row = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "#incidents tr[data-incident-id]"))
        )
        incident_id = row.get_attribute("data-incident-id")
        approve = wait.until(
            ec.element_to_be_clickable(
                (By.CSS_SELECTOR, "#approvals [data-approval-id] button.approve")
            )
        )
        # nothing ran before the person decided
        assert [a.status for a in store.actions(incident_id=incident_id)] == ["pending_approval"]
        approve.click()
        # the console says "approval submitted" until its next refresh drops the approval
        # from the pending list, which can come first when the crew is quick: either will do
        wait.until(
            lambda d: "submitted" in d.find_element(By.ID, "approvals").text
            or not d.find_elements(By.CSS_SELECTOR, "#approvals [data-approval-id]")
        )
        wait.until(
            ec.presence_of_element_located(
                (
                    By.CSS_SELECTOR,
                    f'#incidents tr[data-incident-id="{incident_id}"][data-status="resolved"]',
                )
            )
        )
        driver.save_screenshot(str(tmp_path / "console.png"))
        actions = store.actions(incident_id=incident_id)
        assert [(a.command, a.status) for a in actions] == [("stop", "executed")]
        [approval] = store.approvals(run_id=actions[0].run_id)
        assert approval.status == "approved"
        assert [(d["approver"], d["role"]) for d in approval.decisions] == [
            ("alice", "shift_supervisor")
        ]
        # the API says the same, through the same token
        detail = httpx.get(
            f"{base}/api/v1/incidents/{incident_id}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert detail["actions"][0]["status"] == "executed"
        timeline = driver.find_element(By.ID, "timeline").text
        assert "approval.decided" in timeline and "action.executed" in timeline
    finally:
        driver.quit()


def test_a_revoked_token_signs_the_console_out(tmp_path: Path, model_router: Any) -> None:
    """The console stops using a token the service refuses (its stream and its polls),
    instead of reconnecting with it every 2 s for ever."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    require_chromium()
    store = Store(f"sqlite:///{tmp_path / 'console.db'}")
    access = AccessStore(store)
    row, token = access.create_token("victor", "viewer")
    app = create_app(
        ApiSettings(sse_poll_s=0.05, sse_auth_recheck_s=0.2),
        store=store,
        bus_url=f"memory://console{uuid.uuid4().hex[:8]}",
        router=model_router,
    )
    driver = browser(tmp_path)
    try:
        with on_loopback(app) as base:
            driver.get(f"{base}/console/")
            driver.find_element(By.ID, "token-input").send_keys(token)
            driver.find_element(By.ID, "sign-in").click()
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)
            wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "victor"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "stream-status"), "live"))
            access.revoke(row.id)
            wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "not signed in"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "stream-status"), "off"))
            assert "revoked" in driver.find_element(By.ID, "error").text
            assert driver.execute_script("return sessionStorage.getItem('plantcrew-token')") is None
    finally:
        driver.quit()
        store.dispose()
