"""An operator's path through the Airflow UI, in a real browser (Debian's Chromium, headless, driven by
Playwright): log in, open the rollout DAG, fill the trigger form for the lab, trigger, watch it succeed,
then find the run on the "Rollouts" page (the project's plugin) and open its report from there.
Screenshots of every step are kept in test-artifacts/browser/.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest
import requests

from event_broker_devtools import airflow_server
from event_broker_rollout.evidence import rollouts_page
from event_broker_rollout.evidence.results import report_dir
from tests.conftest import REPO, needs_root

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CONTROLLER = "event_broker_rollout"


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_an_operator_triggers_the_rollout_from_the_ui_and_watches_it_succeed(airflow_api, page):
    server = airflow_server.settings()
    runs_before = {
        run["dag_run_id"] for run in airflow_api.request("GET", f"dags/{CONTROLLER}/dagRuns")["dag_runs"]
    }

    page.goto(f"{server.url}/")
    page.locator("input[name=username]").fill(airflow_server.USER)
    page.locator("input[name=password]").fill(airflow_server.password(server))
    shot(page, "01-login")
    page.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)

    page.goto(f"{server.url}/dags/{CONTROLLER}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    # The lab is the default environment; resume-style subset of stages, and a ticket for the record.
    stages = dialog.locator("#element_stages")
    for stage in ("infrastructure", "security", "integration"):
        stages.get_by_label(f"Remove {stage}").click()
    dialog.locator("#element_change_ticket").fill("CHG-UI-1")
    shot(page, "02-trigger-form")
    submit = dialog.get_by_test_id("trigger-dag-submit")
    assert submit.is_enabled(), "the form must be valid as filled"
    submit.click()

    deadline = time.monotonic() + 60
    new_runs: set[str] = set()
    while not new_runs and time.monotonic() < deadline:
        runs = airflow_api.request("GET", f"dags/{CONTROLLER}/dagRuns")["dag_runs"]
        new_runs = {run["dag_run_id"] for run in runs} - runs_before
        time.sleep(1)
    [run_id] = new_runs
    conf = airflow_api.dag_run(CONTROLLER, run_id)["conf"]
    assert conf["environment"] == "lab" and conf["stages"] == ["preflight", "schemas"]
    assert conf["change_ticket"] == "CHG-UI-1"

    run_page = f"{server.url}/dags/{CONTROLLER}/runs/{run_id}"
    page.goto(run_page)
    shot(page, "03-run-started")
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline:
        state = airflow_api.dag_run(CONTROLLER, run_id)["state"]
        if state in ("success", "failed"):
            break
        time.sleep(5)
    page.goto(run_page)
    # What the operator sees: the run's state badge on its page.
    page.get_by_text(re.compile(r"^success$", re.IGNORECASE)).first.wait_for()
    shot(page, "04-run-succeeded")
    assert state == "success"

    # The evidence, from inside the UI: the Rollouts page (in the navigation, under Browse) lists the run
    # with its verdict and links to its report, served behind the same login.
    page.goto(f"{server.url}/plugin/rollouts")
    page.frame_locator("iframe").get_by_role("heading", name="Rollouts").wait_for()
    shot(page, "05-rollouts-in-the-ui")
    page.goto(f"{server.url}{rollouts_page.URL_PREFIX}/")
    # The rollout's own row (its stage runs are listed too, as rollout__<run id>).
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=run_id, exact=True))
    row.get_by_text("passed").wait_for()
    shot(page, "06-rollouts-page")
    row.get_by_role("link", name="report").click()
    page.wait_for_url(re.compile(r"/reports/event_broker_rollout/"))
    page.get_by_role("heading", name=re.compile(r"Rollout\s+PASSED")).wait_for()
    stages = page.locator("table.stages")
    for stage in ("preflight", "schemas"):
        stages.get_by_role("row").filter(has=page.get_by_role("cell", name=stage, exact=True)).get_by_role(
            "cell", name="passed", exact=True
        ).wait_for()
    shot(page, "07-rollout-report")

    # The lab's latest security and compliance reports (the stage tests wrote them), served the same way.
    for dag_id in ("event_broker_security", "event_broker_compliance"):
        if not (report_dir(dag_id, "latest") / "report.html").is_file():
            continue  # compliance runs before this test in `make test`; alone, it may not have run yet
        page.goto(f"{server.url}{rollouts_page.report_url(dag_id, 'latest')}")
        page.locator("h1 .verdict").wait_for()
        shot(page, f"08-{dag_id.removeprefix('event_broker_')}-report")

    # Without a session or token, neither the page nor a report file is served.
    report = rollouts_page.report_url(CONTROLLER, run_id)
    for path in (f"{rollouts_page.URL_PREFIX}/", report, report.replace("report.html", "report.json")):
        assert requests.get(f"{server.url}{path}", timeout=10).status_code == 401, path
        forged = {"Authorization": "Bearer not-a-token"}
        assert requests.get(f"{server.url}{path}", headers=forged, timeout=10).status_code in (401, 403)
