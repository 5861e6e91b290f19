"""The Dagster UI in a real browser (issues 6, 18): a processed bulk change's summary on its run page,
and its outcome on the `bulk_change` asset partition and its checks' partition view.

On the embedded default (SQLite business database and Dagster storage under a fresh
``BULKCHANGE_HOME`` / ``DAGSTER_HOME``, the repo's ``dagster.yaml`` with telemetry off), the real
``bulk_change_sensor`` and ``process_bulk_change_job`` process a Jasper StatusUpdate against the
Jasper simulator, on a persistent ``DagsterInstance``. Then ``dagster-webserver`` is started on the
repo's ``workspace.yaml`` (module ``bulkchange_pipeline.defs``) with the same environment, and
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) opens the run
page of that partition's run, shows the ``finalize_bulk_change`` output's ``summary`` markdown and
finds its table of counts per device status. Screenshots are kept in
``$BULKCHANGE_TEST_ARTIFACTS`` (default ``bulkchange_pipeline_tests/ui/artifacts/``, ignored by git).

Without Chromium, ChromeDriver or Selenium the test skips; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml

from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.db import database_url, make_engine

from ..conftest import IN_CI
from ..defs.harness import fast_definitions
from ..factories import JASPER_KEY, JASPER_USER, make_account, make_bulk_change, make_devices
from ..ports import free_port

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BULKCHANGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BULKCHANGE_CHROMEDRIVER", "/usr/bin/chromedriver")
# What headless Chromium needs on this machine kind (closed network, root, no GPU, no screen).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)
DEVICES, PURGED = 12, 2  # PURGED of them were purged at the carrier: the carrier refuses those
WEBSERVER_START_SECONDS = 90
UI_WAIT_SECONDS = 45


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(
            f"the browser test must run under CI=true: {reason} (.ci/run installs chromium and chromium-driver)"
        )
    pytest.skip(reason)


def _browser_parts() -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            _unavailable(f"{path} is missing: apt-get install chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed: pip install -e '.[test]'")


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("BULKCHANGE_TEST_ARTIFACTS") or REPO / "bulkchange_pipeline_tests" / "ui" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ProcessedBulkChange:
    partition: str
    run_id: str
    counts: dict[str, int]


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh embedded default: BULKCHANGE_HOME with the business database, DAGSTER_HOME with
    the repo's dagster.yaml (telemetry and the first-visit dialog off)."""
    home = tmp_path / "bulkchange"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    config = yaml.safe_load((REPO / "dagster.yaml").read_text()) or {}
    config["telemetry"] = {"enabled": False}
    config["nux"] = {"enabled": False}  # no "Join the Dagster community" dialog over the page
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("BULKCHANGE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.delenv("BULKCHANGE_DATABASE_URL", raising=False)  # the embedded SQLite file under BULKCHANGE_HOME
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_USERNAME", JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SECRET", JASPER_KEY)
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture
def processed(embedded_home: Path) -> Iterator[ProcessedBulkChange]:
    """A Jasper StatusUpdate processed by the real sensor and job on the persistent instance."""
    url = database_url()
    assert url.startswith("sqlite:///") and str(embedded_home) in url
    migrate.upgrade(url)
    engine = make_engine(url)
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    with sim.run_in_thread() as handle:
        ids = make_account(engine, handle.base_url)
        devices = make_devices(engine, ids, DEVICES)
        sim.seed_devices(
            {"iccid": d["iccid"], "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
            for d in devices
        )
        for d in devices[:PURGED]:
            sim.devices[d["iccid"]]["status"] = "PURGED"
        bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        with dg.DagsterInstance.get() as instance:
            assert not instance.is_ephemeral
            result, runs = tick_and_run(instance, fast_definitions(), run_config=QUIET)
            assert [rr.partition_key for rr in result.run_requests] == [str(bc_id)] and runs[0].success
            # The run page of the partition: the run tagged with it, as the UI's partition views find it.
            [record] = instance.get_run_records(
                dg.RunsFilter(job_name="process_bulk_change_job", tags={"dagster/partition": str(bc_id)})
            )
    counts = count_rows_by_status(engine, bc_id)
    assert counts == {"PROCESSED": DEVICES - PURGED, "API_FAILED": PURGED}
    engine.dispose()
    yield ProcessedBulkChange(str(bc_id), record.dagster_run.run_id, counts)


@pytest.fixture
def webserver(processed: ProcessedBulkChange, tmp_path: Path) -> Iterator[str]:
    """``dagster-webserver -w workspace.yaml`` on a free port with the same environment; its root URL."""
    port = free_port()
    script = Path(sys.executable).with_name("dagster-webserver")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "dagster_webserver"]
    cmd += ["-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    log_path = tmp_path / "webserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_loaded(proc, root, log_path)
        yield root
    finally:
        _stop(proc)
        shutil.copy(log_path, _artifacts_dir() / "webserver.log")


def _wait_until_loaded(proc: subprocess.Popen, root: str, log_path: Path) -> None:
    """Until the webserver answers and its code location has loaded (not an error)."""
    query = "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"
    deadline = time.monotonic() + WEBSERVER_START_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            r = httpx.post(f"{root}/graphql", json={"query": query}, timeout=5)
            entries = r.json()["data"]["workspaceOrError"].get("locationEntries") or []
            last = str(entries)
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
                assert not errors, f"code location failed to load: {errors}\n{log_path.read_text()[-3000:]}"
                return
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.5)
    pytest.fail(
        f"dagster-webserver did not load the workspace in {WEBSERVER_START_SECONDS} s ({last}):\n{log_path.read_text()[-3000:]}"
    )


def _stop(proc: subprocess.Popen) -> None:
    """The webserver and its code server (its own process group, started above)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # a code server left behind in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Headless Chromium under ChromeDriver, both Debian's, with a fresh profile."""
    _browser_parts()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_run_page_shows_the_summary_table(browser, processed: ProcessedBulkChange, webserver: str) -> None:
    """The run page of the bulk change's partition shows finalize_bulk_change's summary table."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    artifacts = _artifacts_dir()
    shot = artifacts / f"run-page-bulk-change-{processed.partition}-summary.png"
    # The run page, its log filtered to the finalize step (an operator types the same filter).
    url = f"{webserver}/runs/{processed.run_id}?logs=step:finalize_bulk_change"
    browser.get(url)
    wait = WebDriverWait(browser, UI_WAIT_SECONDS)
    table_xpath = "//table[.//*[normalize-space()='device status']]"
    try:
        # The header names the job and the partition: this is that partition's run.
        wait.until(
            ec.presence_of_element_located((By.XPATH, "//*[contains(normalize-space(), 'process_bulk_change_job')]"))
        )
        wait.until(
            ec.presence_of_element_located((By.XPATH, f"//*[normalize-space()='partition: {processed.partition}']"))
        )
        # Markdown metadata shows inline when short, else behind a "[Show Markdown]" link opening a dialog.
        found = wait.until(
            ec.any_of(
                ec.presence_of_element_located((By.XPATH, table_xpath)),
                ec.element_to_be_clickable(
                    (By.XPATH, "//tr[td[normalize-space()='summary']]//a[normalize-space()='[Show Markdown]']")
                ),
            )
        )
        browser.save_screenshot(str(artifacts / f"run-page-bulk-change-{processed.partition}.png"))
        if found.tag_name != "table":
            found.click()
        table = wait.until(ec.visibility_of_element_located((By.XPATH, table_xpath)))
        wait.until(lambda _: "PROCESSED" in table.text)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)
        rows = {
            tuple(cell.text.strip() for cell in row.find_elements(By.XPATH, "./td"))
            for row in table.find_elements(By.XPATH, ".//tr[td]")
        }
        page_text = browser.find_element(By.TAG_NAME, "body").text
    except TimeoutException:
        browser.save_screenshot(str(shot.with_name(shot.stem + "-FAILED.png")))
        (artifacts / "page.html").write_text(browser.page_source)
        print(f"screenshot of the failure: {shot.with_name(shot.stem + '-FAILED.png')}")
        raise
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert rows == {(status, str(n)) for status, n in processed.counts.items()}, rows
    assert f"Bulk change {processed.partition}" in page_text


def test_asset_partition_tells_done_with_failures(browser, processed: ProcessedBulkChange, webserver: str) -> None:
    """The bulk change's partition of the ``bulk_change`` asset says ``done_with_failures`` (its
    run is green: the pipeline worked), and its ``no_failed_devices`` check failed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    artifacts = _artifacts_dir()
    shot = artifacts / f"asset-partition-bulk-change-{processed.partition}.png"
    wait = WebDriverWait(browser, UI_WAIT_SECONDS)
    try:
        browser.get(f"{webserver}/assets/bulk_change?view=partitions&partition={processed.partition}")
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space()='done_with_failures']")))
        browser.save_screenshot(str(shot))
        partition_text = browser.find_element(By.TAG_NAME, "body").text
        browser.get(f"{webserver}/assets/bulk_change?view=checks")
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space()='no_failed_devices']")))
        checks_shot = shot.with_name(shot.stem + "-checks.png")
        browser.save_screenshot(str(checks_shot))
        checks_text = browser.find_element(By.TAG_NAME, "body").text
        # The check's own Partitions tab: one status per bulk change, the at-a-glance view.
        tabs = browser.find_elements(
            By.XPATH, "//*[@role='tab' or self::a or self::button][normalize-space()='Partitions']"
        )
        tabs[-1].click()
        wait.until(ec.presence_of_element_located((By.XPATH, f"//*[normalize-space()='{processed.partition}']")))
        # The check counts this partition as failed (its evaluation targets the latest materialization).
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space()='Failed (1)']")))
        browser.save_screenshot(str(shot.with_name(shot.stem + "-check-partitions.png")))
    except TimeoutException:
        browser.save_screenshot(str(shot.with_name(shot.stem + "-FAILED.png")))
        (artifacts / "asset-page.html").write_text(browser.page_source)
        raise
    print(f"\nscreenshots: {shot}, {checks_shot}")
    assert shot.stat().st_size > 10_000
    assert "what_next" in partition_text and f"bulkchange results {processed.partition}" in partition_text
    assert "no_failed_devices\nFailed" in checks_text and "settled\nSucceeded" in checks_text, checks_text


def test_console_link_opens_the_runs_of_that_bulk_change(
    browser, processed: ProcessedBulkChange, webserver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's "Dagster runs" link, pointed at this webserver, lists that bulk change's run."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from bulkchange_pipeline.console.pages import dagster_runs_url

    monkeypatch.setenv("BULKCHANGE_DAGSTER_URL", webserver)
    url = dagster_runs_url(int(processed.partition))
    assert url.startswith(webserver)
    shot = _artifacts_dir() / f"runs-filtered-bulk-change-{processed.partition}.png"
    browser.get(url)
    try:
        WebDriverWait(browser, UI_WAIT_SECONDS).until(
            ec.presence_of_element_located((By.XPATH, f"//a[contains(@href, '/runs/{processed.run_id}')]"))
        )
    except TimeoutException:
        browser.save_screenshot(str(shot.with_name(shot.stem + "-FAILED.png")))
        raise
    browser.save_screenshot(str(shot))
    assert f"bulkchange/bulk_change_id={processed.partition}" in browser.find_element(By.TAG_NAME, "body").text
