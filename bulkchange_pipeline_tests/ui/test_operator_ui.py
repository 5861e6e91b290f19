"""Terminate and a launchpad run as an operator does them: the Dagster UI in headless Chromium (issue 14).

Against the production shape of ``deploy/test_crash_recovery.py`` (its module fixture, imported:
``bulkchange deploy-local start`` on fresh PostgreSQL databases with the shipped instance config,
the demo tenant's Jasper account pointing at its holding Jasper simulator), with the browser of
``ui/test_dagster_ui.py`` (imported: Debian's Chromium under ChromeDriver, skipped without them
except under ``CI=true``):

1. A Jasper StatusUpdate of 40 devices (the account at 5 calls/s, batches of 20: chunks of 10) is
   submitted with ``POST /bulk-changes``; the sensor's run starts and its third PUT is held at the
   carrier.
2. The run's page (``/runs/<id>``): the operator clicks "Terminate", then the dialog's
   "Terminate 1 run". Once the step reports the stop the held call is released.
3. The page shows the run Canceled; in the databases the run is CANCELED, the chunk in flight is
   PROCESSED, every row not sent is CANCELLED and the bulk change's log says "Stopped by Terminate
   of Dagster run <id>".
4. The launchpad of ``process_bulk_change_job`` (``/locations/<location>/jobs/<job>/playground``):
   the operator picks the bulk change's partition and clicks "Launch Run". The launched run (the
   page the UI opens) carries ``bulkchange/carrier_account`` and finishes Success; the cancelled
   rows stay CANCELLED, nothing is NEW, nothing more reaches the carrier.

The UI is opened once before anything is held (the shipped instance config turns Dagster's "Join
the Dagster community" dialog off: the test checks it does not appear). Screenshots of every step are kept
in ``$BULKCHANGE_TEST_ARTIFACTS`` (default ``bulkchange_pipeline_tests/ui/artifacts/``, ignored by
git), named ``operator-*.png``. About 1.5 minutes on 2 CPUs (a third of it starting the deployment).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.pools import ACCOUNT_TAG, account_tag_value
from bulkchange_pipeline.deploy import LOCATION
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.schema import bulk_change_log
from bulkchange_pipeline.store.seed import demo_credentials_names

from ..deploy.test_crash_recovery import (
    PROCESS_JOB,
    Shape,
    assert_header_is_what_rows_say,
    devices_with,
    run_messages,
    started_run,
    wait_settled,
)
from ..reliability.common import row_statuses
from ..waiting import wait_until
from .test_dagster_ui import UI_WAIT_SECONDS, _artifacts_dir, _browser_parts

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

DEVICES = 40
RUN_URL = re.compile(r"/runs/([0-9a-f-]{36})")


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    """Skip (fail under CI=true) before the deployment is started, not after."""
    _browser_parts()


class Operator:
    """The browser, with screenshots named per step and the page kept when a step fails."""

    def __init__(self, driver: Any, root: str) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.root = driver, root
        # React re-renders replace elements under a wait (the launchpad's partition picker does, once loaded).
        self.wait = WebDriverWait(driver, UI_WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException])
        self.artifacts = _artifacts_dir()
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.root + path)

    def shot(self, name: str) -> Path:
        path = self.artifacts / f"operator-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        print(f"screenshot: {path}")
        return path

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def xpath(self, xpath: str, clickable: bool = False) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        if clickable:
            return self.wait.until(ec.element_to_be_clickable((By.XPATH, xpath)))
        # Any visible match: the same text can sit first in a collapsed cell (e.g. the run log shows
        # the bulk_change asset's metadata, truncated, above finalize's output metadata).
        return self.wait.until(ec.visibility_of_any_elements_located((By.XPATH, xpath)))[0]

    def click(self, xpath: str) -> None:
        element = self.xpath(xpath, clickable=True)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def pick_partition(self, key: str) -> None:
        """The launchpad's "Partition" picker: type the key, click it in the list. The picker is
        replaced when its partitions have loaded, so a try on an element it dropped is repeated."""
        from selenium.common.exceptions import (
            ElementClickInterceptedException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        item = (By.XPATH, f"//*[contains(@class, 'menu')]//*[normalize-space()='{key}']")
        deadline = time.monotonic() + UI_WAIT_SECONDS
        while True:
            try:
                box = self.xpath("//input[@placeholder='Partition']", clickable=True)
                if box.get_attribute("value") == key:  # picked by an earlier try before the picker was replaced
                    return
                box.click()
                box.send_keys(Keys.CONTROL, "a")
                box.send_keys(key)
                WebDriverWait(self.driver, 5).until(ec.element_to_be_clickable(item)).click()
                WebDriverWait(self.driver, 5).until(
                    lambda d: (
                        d.find_element(By.XPATH, "//input[@placeholder='Partition']").get_attribute("value") == key
                    )
                )
                return
            except (StaleElementReferenceException, TimeoutException, ElementClickInterceptedException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def dismiss_community_dialog(self, wait_seconds: float = 0.0) -> bool:
        """Dagster's "Join the Dagster community" dialog, clicked away with "Skip" if it shows (the
        shipped config turns it off). True when it was there."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        skip = (By.XPATH, "//*[@role='dialog']//button[normalize-space()='Skip']")
        try:
            button = (
                WebDriverWait(self.driver, wait_seconds).until(ec.element_to_be_clickable(skip))
                if wait_seconds
                else next(b for b in self.driver.find_elements(*skip) if b.is_displayed() and b.is_enabled())
            )
        except (TimeoutException, StopIteration):
            return False
        time.sleep(0.5)  # its fade-in
        self.shot("0-community-dialog")
        button.click()
        WebDriverWait(self.driver, UI_WAIT_SECONDS).until(ec.invisibility_of_element_located(skip))
        return True

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            self.shot(f"{name}-FAILED")
            (self.artifacts / f"operator-{name}-FAILED.html").write_text(self.driver.page_source)
            raise


def _button(label: str, within: str = "") -> str:
    return f"{within}//button[normalize-space()='{label}']"


DIALOG = "//*[contains(@class, 'dialog') or @role='dialog']"


def test_operator_terminates_a_run_then_launches_the_partition_from_the_launchpad(fresh: Shape, browser: Any) -> None:
    shape, jasper = fresh, fresh.jasper
    ui = Operator(browser, shape.dep.url("webserver"))
    with ui.step("0-runs"):  # the UI loaded once before anything is held, as an operator has it open
        ui.open("/runs")
        ui.xpath("//*[normalize-space()='Runs']")
        # The shipped config turns Dagster's "Join the Dagster community" sign-up dialog off (nux).
        assert not ui.dismiss_community_dialog(wait_seconds=3), "the sign-up dialog covers the operator's first page"
        ui.shot("0-runs")

    # 1. 40 devices, batches of 20, Jasper at 5/s with one call in flight: chunks of 10; the third PUT held.
    shape.provider("jasper", batch_size=20, rate_per_second=5.0)
    iccids = shape.devices("jasper", DEVICES, "ACTIVATED")
    everything = set(iccids)
    jasper.release_applies = True  # the held call completes once released, like a slow carrier answer
    jasper.hold_when = lambda iccid, body: iccid in everything and len(everything & set(jasper.applied_counts)) >= 2
    bc_id = shape.submit("jasper", iccids, statusUpdate={"status": "DEACTIVATED"})
    wait_until(lambda: jasper.holder.held, timeout=90, interval=0.01, what="the third PUT held at the carrier")
    record = started_run(shape, bc_id)
    assert record is not None, [r.dagster_run.status for r in shape.runs(bc_id)]
    run_id = record.dagster_run.run_id

    # 2. The run's page: Terminate, and the confirmation dialog.
    with ui.step("1-run-started"):
        ui.open(f"/runs/{run_id}")
        ui.xpath(f"//*[normalize-space()='partition: {bc_id}']")
        ui.dismiss_community_dialog()
        ui.xpath(_button("Terminate"), clickable=True)
        ui.shot("1-run-started")
    in_flight = {r.iccid for r in row_statuses(shape.engine, bc_id) if r.status == "PROCESSING"}
    assert len(in_flight) == 10, in_flight
    with ui.step("2-terminate-dialog"):
        ui.click(_button("Terminate"))
        confirm = _button("Terminate 1 run", DIALOG)
        ui.xpath(confirm, clickable=True)
        dialog_text = ui.xpath(DIALOG).text
        ui.shot("2-terminate-dialog")
        stopped_at = time.monotonic()
        ui.click(confirm)
    wait_until(
        lambda: any("run is stopping" in m for m in run_messages(shape, run_id)),
        timeout=30,
        interval=0.05,
        what="apply_batch to report the stop: the UI's Terminate did not reach the step",
    )
    jasper.hold_when = None
    jasper.holder.released.set()

    # 3. Canceled, in the UI and in the databases.
    wait_settled(shape, bc_id, lambda s: s not in ("NEW", "PROCESSING"), timeout=90)
    with ui.step("3-canceled"):
        ui.open(f"/runs/{run_id}")
        ui.xpath("//*[normalize-space()='Canceled']")
        ui.dismiss_community_dialog()
        time.sleep(1.0)  # the run log streams in
        canceled_text = ui.text()
        ui.shot("3-canceled")
        assert not browser.find_elements("xpath", _button("Terminate")), "a Canceled run still offers Terminate"
    run = shape.instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.CANCELED, run and run.status
    assert [r.dagster_run.run_id for r in shape.runs(bc_id)] == [run_id], "a Canceled run is not retried"
    after = [i for t, i in jasper.put_starts if t > stopped_at]
    assert set(after) <= in_flight, f"carrier calls after the stop beyond the chunk in flight: {set(after) - in_flight}"
    rows = {r.iccid: r.status for r in row_statuses(shape.engine, bc_id)}
    assert rows == {i: "PROCESSED" if i in in_flight else "CANCELLED" for i in iccids}, count_rows_by_status(
        shape.engine, bc_id
    )
    status, counts = assert_header_is_what_rows_say(shape, bc_id)
    assert counts == {"PROCESSED": 10, "CANCELLED": 30}, (status, counts)
    with shape.engine.connect() as conn:
        notes = (
            conn.execute(
                sa.select(bulk_change_log.c.description).where(
                    bulk_change_log.c.bulk_change_id == bc_id, bulk_change_log.c.device_change_id.is_(None)
                )
            )
            .scalars()
            .all()
        )
    assert any(f"Stopped by Terminate of Dagster run {run_id}" in n for n in notes), notes

    # 4. The launchpad of the job, with the bulk change's partition picked, and "Launch Run".
    with ui.step("4-launchpad"):
        ui.open(f"/locations/{LOCATION}/jobs/{PROCESS_JOB}/playground")
        ui.xpath("//input[@placeholder='Partition']")
        ui.dismiss_community_dialog()
        ui.pick_partition(str(bc_id))
        # The partition's tags, asked of the code server, shown above the config editor.
        ui.xpath(f"//*[contains(normalize-space(), '{ACCOUNT_TAG}')]")
        launch = "//button[contains(normalize-space(), 'Launch Run')]"
        ui.xpath(launch, clickable=True)  # enabled once the launchpad has validated the partition's config
        launchpad_text = ui.text()
        ui.shot("4-launchpad")
        ui.click(launch)
        wait_until(
            lambda: (m := RUN_URL.search(browser.current_url)) and m.group(1) != run_id,
            timeout=UI_WAIT_SECONDS,
            interval=0.2,
            what="the UI to open the launched run's page",
        )
    launched_id = RUN_URL.search(browser.current_url).group(1)  # type: ignore[union-attr]
    launched = shape.instance.get_run_by_id(launched_id)
    assert launched is not None and launched.tags.get(ACCOUNT_TAG) == account_tag_value(
        demo_credentials_names()["jasper"]
    ), launched and launched.tags
    assert launched.tags.get("dagster/partition") == str(bc_id) and launched.job_name == PROCESS_JOB
    wait_settled(shape, bc_id, lambda s: s not in ("NEW", "PROCESSING"), timeout=90)
    with ui.step("5-launched-run"):
        ui.open(f"/runs/{launched_id}")
        ui.xpath("//*[normalize-space()='Success']")
        # finalize_bulk_change's output metadata in the run log: the bulk change as it stands.
        ui.xpath("//tr[td[normalize-space()='rows_cancelled'] and td[normalize-space()='30']]")
        ui.xpath("//tr[td[normalize-space()='status'] and td[normalize-space()='PROCESSED']]")
        launched_text = ui.text()
        ui.shot("5-launched-run")
    final = shape.instance.get_run_by_id(launched_id)
    assert final is not None and final.status == dg.DagsterRunStatus.SUCCESS, final and final.status
    assert [r.dagster_run.run_id for r in shape.runs(bc_id)] == [run_id, launched_id]
    assert {r.iccid: r.status for r in row_statuses(shape.engine, bc_id)} == rows, "the launchpad run changed a row"
    assert assert_header_is_what_rows_say(shape, bc_id) == (status, counts)
    assert {i: jasper.puts[i] for i in in_flight} == dict.fromkeys(in_flight, 1)
    assert not (set(jasper.applied_counts) & everything) - in_flight, "the launchpad run sent a cancelled row"
    assert devices_with(shape, sorted(everything - in_flight), "ACTIVATED") == DEVICES - len(in_flight)

    finalize_events = [
        (e.dagster_event.event_type_value, (e.message or "").splitlines()[0][:120])
        for e in shape.instance.all_logs(run_id)
        if e.dagster_event and e.step_key == "finalize_bulk_change"
    ]
    print(f"\nthe Canceled run's finalize_bulk_change events: {finalize_events}")
    for shot in ui.shots:
        assert shot.stat().st_size > 10_000, shot
    # What was cancelled is in the Canceled run's own log (its output metadata is dropped by the stop).
    assert any("device rows not yet sent are CANCELLED" in (e.message or "") for e in shape.instance.all_logs(run_id))
    print(
        f"\nterminate dialog: {dialog_text!r}\nheader after Terminate: {status} {counts}"
        f"\nrun page after Terminate mentions Canceled: {'Canceled' in canceled_text}"
        f"\nlaunchpad shows {ACCOUNT_TAG}: {ACCOUNT_TAG in launchpad_text}; launched run {launched_id} tags {dict(launched.tags)}"
        f"\nlaunched run page mentions Success: {'Success' in launched_text}"
    )
