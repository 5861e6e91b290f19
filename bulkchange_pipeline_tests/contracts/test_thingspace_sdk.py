"""Verizon's own public SDK (``sdksio-verizon-apis-sdk``, generated from Verizon's API description)
drives our ThingSpace simulator: what a real client sends, the simulator must take, and what the
simulator answers, the SDK must parse into its models.

The SDK reads its base URLs from a class-level table; the test points it at the simulator for the
test's duration only (``monkeypatch``). Sources of each flow: carriers.md section 2 and the SDK's
own controllers (session management, device management).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from verizon.configuration import Configuration, Environment
from verizon.http.auth.thingspace_oauth import ThingspaceOauthCredentials
from verizon.http.auth.vz_m2m_token import VZM2mTokenCredentials
from verizon.models.account_device_list import AccountDeviceList
from verizon.models.account_device_list_request import AccountDeviceListRequest
from verizon.models.carrier_actions_request import CarrierActionsRequest
from verizon.models.change_device_id_request import ChangeDeviceIdRequest
from verizon.models.device_id import DeviceId
from verizon.models.log_in_request import LogInRequest
from verizon.verizon_client import VerizonClient

from bulkchange_pipeline.simulators.thingspace import ThingSpaceSimulator
from bulkchange_pipeline.simulators.thingspace_rules import make_devices

APP = ("sdk-app", "sdk-app-secret")
USER, PASSWORD, ACCOUNT = "zbeeblebrox", "IMgr8", "0000123456-00001"


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ThingSpaceSimulator, list[dict]]]:
    simulator = ThingSpaceSimulator({APP[0]: APP[1]}, {USER: (PASSWORD, ACCOUNT)})
    devices = make_devices(150)
    simulator.seed_devices(devices)
    with simulator.run_in_thread() as handle:
        production = VerizonClient().config.environments[Environment.PRODUCTION]
        pointed = {
            server: url.replace("https://thingspace.verizon.com", handle.root_url) for server, url in production.items()
        }
        monkeypatch.setattr(Configuration, "environments", {Environment.PRODUCTION: pointed})
        yield simulator, devices
    simulator.close()


def _client(session_token: str) -> VerizonClient:
    def token(last, manager):
        return last if last and not manager.is_token_expired(last) else manager.fetch_token()

    return VerizonClient(
        thingspace_oauth_credentials=ThingspaceOauthCredentials(
            oauth_client_id=APP[0], oauth_client_secret=APP[1], oauth_token_provider=token
        ),
        vz_m2m_token_credentials=VZM2mTokenCredentials(vz_m2m_token=session_token),
    )


def test_verizon_sdk_session_list_paging_action_device_id_and_logout(sim) -> None:
    simulator, devices = sim
    login = _client("none").session_management.start_connectivity_management_session(
        LogInRequest(username=USER, password=PASSWORD)
    )
    assert login.status_code == 200 and login.body.session_token
    client = _client(login.body.session_token)

    # Paging as the SDK models it: largestDeviceIdSeen / maxNumberOfDevices in, hasMoreData out.
    first = client.device_management.list_devices_information(
        AccountDeviceListRequest(account_name=ACCOUNT, max_number_of_devices=100, largest_device_id_seen=0)
    )
    assert (first.status_code, first.body.has_more_data, len(first.body.devices)) == (202, True, 100)
    [seen] = [a.value for a in first.body.devices[-1].extended_attributes if a.key == "DeviceId"]
    second = client.device_management.list_devices_information(
        AccountDeviceListRequest(account_name=ACCOUNT, max_number_of_devices=100, largest_device_id_seen=int(seen))
    )
    assert (second.status_code, second.body.has_more_data, len(second.body.devices)) == (200, False, 50)
    listed = {d.device_ids[0].id for page in (first, second) for d in page.body.devices}
    assert len(listed) == 150

    # A device action without accountName (optional in the SDK's model) is accepted and applied.
    suspend = client.device_management.suspend_service_for_devices(
        CarrierActionsRequest(devices=[AccountDeviceList(device_ids=[DeviceId(id=devices[0]["iccid"], kind="iccid")])])
    )
    assert suspend.status_code == 200 and suspend.body.request_id
    # The device-id change at the SDK's path, with the SDK's body (no accountName).
    new_iccid = make_devices(1, start=999)[0]["iccid"]
    change = client.device_management.update_device_id(
        "4G",
        ChangeDeviceIdRequest(
            device_ids=[DeviceId(id=devices[1]["iccid"], kind="iccid")],
            change_4_g_option="ChangeICCID",
            device_ids_to=[DeviceId(id=new_iccid, kind="iccid")],
        ),
    )
    assert change.status_code == 200 and change.body.request_id
    assert simulator.wait_idle(10)
    assert simulator.device(devices[0]["iccid"])["state"] == "suspend"

    # Logout ends the session: the SDK's next call with that token is refused.
    assert client.session_management.end_connectivity_management_session().status_code == 200
    assert simulator.stats()["logouts"] == 1
    with pytest.raises(Exception) as refused:
        client.device_management.list_devices_information(AccountDeviceListRequest(account_name=ACCOUNT))
    assert getattr(refused.value, "response_code", None) == 400
