"""The operators' console in headless Chromium (issue 18): sign in, search, a failed device drilled
down to its carrier exchanges, a cancel with its confirmation, and a CSV upload confirmed after its
dry-run report.

``create_app`` serves the console with uvicorn on a free loopback port (``run_app_in_thread``)
over a SQLite business database holding the demo seed: a Jasper bulk change whose two devices the
carrier refused (each with its recorded exchanges), and a queued one to cancel. Debian's Chromium
under ChromeDriver (the ``browser`` fixture of ``test_dagster_ui.py``) does what an operator does:
types, clicks, follows links. A screenshot of every page is saved as ``console-*.png`` in the
artifacts folder (``$BULKCHANGE_TEST_ARTIFACTS``, default ``bulkchange_pipeline_tests/ui/artifacts/``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change

from ..console.conftest import Console
from ..intake.test_api import make_api
from .test_dagster_ui import UI_WAIT_SECONDS, _artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_console_in_a_browser(browser, engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    api = next(make_api(engine, db_url, devices_per_carrier=20))
    console = Console(api, api.client, api.demo["Authorization"].removeprefix("Bearer "), api.other["X-API-Key"])
    failed_id, rows = console.failed_bulk_change()
    queued_id = api.submit(api.seed.sample_iccids["jasper"][5:9])
    artifacts = _artifacts_dir()
    wait = WebDriverWait(browser, UI_WAIT_SECONDS)

    def shot(name: str) -> None:
        browser.save_screenshot(str(artifacts / f"console-{name}.png"))

    def css(selector: str):
        return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))

    def search(text: str) -> None:
        box = css("input[name=q]")
        box.clear()
        box.send_keys(text)
        box.submit()

    with run_app_in_thread(create_app(db_url)) as server:
        root = server.root_url
        # 1. Signed out, the console sends the operator to the sign-in form; a wrong key is refused.
        browser.get(f"{root}/console/")
        css("input[name=api_key]").send_keys("bc_wrong")
        shot("login")
        css("form[action='/console/login'] button").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".msg.error"), "not valid"))
        css("input[name=api_key]").send_keys(console.demo_key)
        css("form[action='/console/login'] button").click()
        wait.until(ec.presence_of_element_located((By.ID, "bulk-changes")))
        assert "signed in as api-key:ops" in browser.page_source
        shot("list")

        # 2. Search by ICCID: the device page, its bulk changes and before -> after history.
        search(rows[0]["iccid"])
        wait.until(ec.presence_of_element_located((By.ID, "history")))
        assert "RETIRED" in css("#history").text and str(failed_id) in css("#device-changes").text
        shot("device")

        # 3. Search by id: the bulk change; its failed devices; one of them drilled down.
        search(str(failed_id))
        wait.until(ec.text_to_be_present_in_element((By.ID, "outcome"), "done with failures"))
        shot("bulk-change")
        Select(css("select[name=status]")).select_by_value("API_FAILED")  # submits itself (onchange)
        wait.until(lambda d: "status=API_FAILED" in d.current_url)
        devices = css("#devices").text
        assert rows[2]["iccid"] in devices and rows[0]["iccid"] not in devices
        assert "\\u202eKCOL\\u202c" in devices  # the bidi override is shown, not obeyed
        shot("bulk-change-failed")
        browser.find_element(By.CSS_SELECTOR, f"a[href$='/rows/{rows[2]['id']}']").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".exchange")))
        exchanges = browser.find_elements(By.CSS_SELECTOR, ".exchange")
        assert len(exchanges) == 2 and "Rate plan locked" in exchanges[0].text and "HTTP 400" in exchanges[0].text
        shot("exchanges")

        # 4. Cancel the queued one: the confirmation says what will happen; only its button does it.
        browser.get(f"{root}/console/bulk-changes/{queued_id}")
        css(f"a[href='/console/bulk-changes/{queued_id}/cancel']").click()
        wait.until(ec.presence_of_element_located((By.ID, "confirm")))
        assert "4 device rows not yet sent" in browser.page_source
        assert count_rows_by_status(engine, queued_id) == {"NEW": 4}
        shot("cancel-confirm")
        css("#confirm").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "result"), "Cancelled 4 device rows"))
        assert get_bulk_change(engine, queued_id)["status"] == "CANCELLED"
        shot("cancel-done")

        # 5. Upload a CSV: the dry-run report first, then the confirmed submission.
        csv_file = tmp_path / "retire.csv"
        good = [*api.seed.sample_iccids["jasper"][3:5], api.seed.sample_iccids["jasper"][9]]
        csv_file.write_text(
            "iccid,status\n" + "".join(f"{i},RETIRED\n" for i in good) + "8901100000000000999,RETIRED\n"
        )
        browser.get(f"{root}/console/upload")
        Select(css("select[name=service_provider]")).select_by_value(str(api.jasper))
        Select(css("select[name=change_type]")).select_by_value("1")
        css("input[type=file]").send_keys(str(csv_file))
        shot("upload")
        css("#dry-run").click()
        wait.until(ec.presence_of_element_located((By.ID, "confirm-upload")))
        assert (
            "3 of 4 devices accepted" in css("#dry-run-message").text and "8901100000000000999" in css("#refused").text
        )
        shot("upload-report")
        css("#confirm-upload").click()
        wait.until(lambda d: "/console/bulk-changes/" in d.current_url)
        new_id = int(browser.current_url.rstrip("/").rsplit("/", 1)[1])
        assert count_rows_by_status(engine, new_id) == {"NEW": 3, "ERROR": 1}
        css("#devices")
        shot("upload-submitted")
