"""A request split by carrier in the console, in headless Chromium (issue 21): the operator opens
the submission, follows a child to its bulk change page and comes back by its submission link.

The same set-up as ``test_console_ui`` (``create_app`` under uvicorn on a free port, the demo seed
on SQLite, Debian's Chromium under ChromeDriver); screenshots ``console-submission*.png`` go to the
artifacts folder."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.store.seed import demo_iccid

from ..intake.test_api import make_api
from .test_dagster_ui import UI_WAIT_SECONDS, _artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_submission_and_its_children_in_a_browser(browser, engine: sa.Engine, db_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    api = next(make_api(engine, db_url, devices_per_carrier=5))
    request = BulkChangeRequest.model_validate(
        {
            "changeType": "StatusUpdate",
            "devices": [
                api.seed.sample_iccids["jasper"][0],
                {"iccid": api.seed.sample_iccids["thingspace"][0], "targetStatus": "deactive"},
                demo_iccid(1, 0, 999),
            ],
            "statusUpdate": {"targetStatus": "DEACTIVATED"},
        }
    )
    outcome = submit(engine, api.seed.tenant_id, request, "api-key:ops")
    sid, (jasper, _) = outcome.submission_id, [c.bulk_change_id for c in outcome.children]
    key = api.demo["Authorization"].removeprefix("Bearer ")
    artifacts = _artifacts_dir()
    wait = WebDriverWait(browser, UI_WAIT_SECONDS)

    def css(selector: str):
        return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))

    with run_app_in_thread(create_app(db_url)) as server:
        browser.get(f"{server.root_url}/console/submissions/{sid}")
        css("input[name=api_key]").send_keys(key)  # signed out: the sign-in form, then back here
        css("form[action='/console/login'] button").click()
        wait.until(ec.presence_of_element_located((By.ID, "children")))
        assert "Verizon ThingSpace" in css("#children").text and demo_iccid(1, 0, 999) in css("#refused").text
        browser.save_screenshot(str(artifacts / "console-submission.png"))
        css(f"#children a[href='/console/bulk-changes/{jasper}']").click()
        wait.until(ec.presence_of_element_located((By.ID, "devices")))
        assert f"submission {sid}" in css("#submission").text
        css("#submission").click()
        wait.until(lambda d: d.current_url.endswith(f"/console/submissions/{sid}"))
        browser.save_screenshot(str(artifacts / "console-submission-back.png"))
