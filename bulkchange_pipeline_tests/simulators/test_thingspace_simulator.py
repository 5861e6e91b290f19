"""The ThingSpace simulator against its wire format with a raw HTTP client: tokens, sessions,
actions, callbacks and their delivery switches, limits, request status, device list, admin."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from bulkchange_pipeline.simulators import thingspace_rules as rules
from bulkchange_pipeline.simulators.thingspace_rules import make_devices
from bulkchange_pipeline_tests.ports import free_port
from bulkchange_pipeline_tests.simulators.fixtures import (
    TS_ACCOUNT,
    TS_CB_PASSWORD,
    TS_CB_USER,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    TS_USER,
)
from bulkchange_pipeline_tests.waiting import wait_for_server, wait_until

pytestmark = pytest.mark.timeout(60)


class M2M:
    """A tiny raw client: token, login, then M2M calls with both headers."""

    def __init__(self, handle) -> None:
        self.http = httpx.Client(base_url=handle.base_url, timeout=5)
        self.token = self.get_token().json()["access_token"]
        self.session = self.http.post(
            "/api/m2m/v1/session/login",
            json={"username": TS_USER, "password": TS_PASSWORD},
            headers={"Authorization": f"Bearer {self.token}"},
        ).json()["sessionToken"]

    def get_token(self, secret: str = TS_CLIENT_SECRET) -> httpx.Response:
        return self.http.post(
            "/api/ts/v1/oauth2/token", auth=(TS_CLIENT_ID, secret), data={"grant_type": "client_credentials"}
        )

    def call(self, method: str, path: str, body: object = None) -> httpx.Response:
        return self.http.request(
            method,
            "/api/m2m/v1/" + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}", "VZ-M2M-Token": self.session},
        )

    def action(self, action: str, devices: list[dict], **extra: object) -> httpx.Response:
        body = {
            "devices": [{"deviceIds": [{"kind": "iccid", "id": d["iccid"]}]} for d in devices],
            "accountName": TS_ACCOUNT,
            **extra,
        }
        return self.call("PUT" if action == "plan" else "POST", f"devices/actions/{action}", body)

    def register(self, handle) -> None:
        r = self.call(
            "POST",
            f"callbacks/{TS_ACCOUNT}",
            {
                "name": "CarrierService",
                "url": handle.root_url + "/callbacks/thingspace",
                "username": TS_CB_USER,
                "password": TS_CB_PASSWORD,
            },
        )
        assert r.status_code == 200, r.text


def test_token_is_reused_until_it_expires(thingspace_sim, sim_clock) -> None:
    sim = thingspace_sim.simulator
    sim.configure(token_ttl_seconds=0.5)
    c = M2M(thingspace_sim)
    again = c.get_token().json()
    assert again["access_token"] == c.token and again["token_type"] == "Bearer"
    assert c.get_token("nope").json()["error"] == "invalid_client"
    sim_clock.advance(0.6)
    r = c.call("POST", "devices/actions/list", {"accountName": TS_ACCOUNT})
    assert r.status_code == 401 and r.json()["fault"]["code"] == "900901"
    assert c.get_token().json()["access_token"] != c.token
    no_bearer = c.http.post("/api/m2m/v1/devices/actions/list", json={})
    assert no_bearer.status_code == 401 and no_bearer.json()["fault"]["code"] == "900902"


def test_session_expires_when_idle_and_logins_lock_after_five_failures(thingspace_sim, sim_clock) -> None:
    sim = thingspace_sim.simulator
    c = M2M(thingspace_sim)
    assert c.call("POST", "devices/actions/list", {"accountName": TS_ACCOUNT}).status_code == 200
    sim.configure(session_idle_seconds=0.2)
    sim_clock.advance(0.3)
    r = c.call("POST", "devices/actions/list", {"accountName": TS_ACCOUNT})
    assert r.status_code == 400 and r.json()["errorCode"] == rules.ERR_SESSION_EXPIRED
    login = lambda pw: c.http.post(  # noqa: E731
        "/api/m2m/v1/session/login",
        json={"username": TS_USER, "password": pw},
        headers={"Authorization": f"Bearer {c.token}"},
    )
    codes = [login("wrong").json()["errorCode"] for _ in range(6)]
    assert codes[:5] == [rules.ERR_LOGIN_FAILED] * 5 and codes[5] == rules.ERR_LOGIN_LOCKED
    assert login(TS_PASSWORD).json()["errorCode"] == rules.ERR_LOGIN_LOCKED


def test_callbacks_success_and_fault_shapes_with_retries(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    ok, pre = make_devices(2)
    pre["state"] = "pre-active"
    sim.seed_devices([ok, pre])
    c = M2M(thingspace_sim)
    unregistered = c.action("suspend", [ok]).json()["requestId"]
    assert sim.wait_idle(5) and sim.stats()["callbacks_unregistered"] == 1
    c.register(rhandle)
    listed = c.call("GET", f"callbacks/{TS_ACCOUNT}").json()
    assert listed == [  # as Verizon answers: serviceName, and the listener's own credentials
        {
            "accountName": TS_ACCOUNT,
            "serviceName": "CarrierService",
            "url": rhandle.root_url + "/callbacks/thingspace",
            "username": TS_CB_USER,
            "password": TS_CB_PASSWORD,
        }
    ]
    gone = c.call("DELETE", f"callbacks/{TS_ACCOUNT}/name/CarrierService")
    assert gone.json() == {"accountName": TS_ACCOUNT, "serviceName": "CarrierService"}
    assert c.call("GET", f"callbacks/{TS_ACCOUNT}").json() == []
    c.register(rhandle)
    receiver.fail_first = 2  # the first two deliveries are refused and retried
    rid = c.action("restore", [ok, pre]).json()["requestId"]
    assert rid != unregistered
    assert sim.wait_idle(10)
    bodies = {b["deviceIds"][0]["id"]: b for b in receiver.wait_for(2)}
    success, fault = bodies[ok["iccid"]], bodies[pre["iccid"]]
    assert set(success) == {
        "username",
        "password",
        "requestId",
        "deviceIds",
        "deviceResponse",
        "status",
        "callbackCount",
        "maxCallbackThreshold",
    }
    assert success["status"] == "Success" and success["requestId"] == rid
    assert success["username"] == TS_CB_USER and success["password"] == TS_CB_PASSWORD
    assert "restoreResponse" in success["deviceResponse"]
    assert fault["status"] == "Failed" and fault["faultResponse"]["faultcode"] == rules.F_STATE_INVALID
    assert fault["faultResponse"]["faultstring"].startswith("REQUEST_FAILED.")
    assert fault["maxCallbackThreshold"] == 4 and fault["password"] == TS_CB_PASSWORD
    assert sorted(b["callbackCount"] for b in bodies.values())[-1] >= 2
    assert sim.stats()["callbacks_failed_attempts"] == 2 and sim.stats()["callbacks_sent"] == 2
    assert sim.device(ok["iccid"])["state"] == "active" and sim.applied_counts[ok["iccid"]] == 2


def test_delivery_switches_duplicate_shuffle_drop_delay(thingspace_sim, callback_receiver, sim_clock) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    devices = make_devices(200)
    sim.seed_devices(devices)
    c = M2M(thingspace_sim)
    c.register(rhandle)
    sim.configure(duplicate_rate=0.2, drop_rate=0.1, shuffle_callbacks=True, seed=4, callback_delay_seconds=0.3)
    c.action("suspend", devices)

    def handed_to_senders() -> bool:  # the request is applied; only its callbacks are outstanding
        s = sim.stats()
        return (
            s["applied_total"] == 200 and s["outstanding"] == 200 - s["callbacks_dropped"] + s["callbacks_duplicated"]
        )

    wait_until(handed_to_senders, timeout=20, what="the request applied and its callbacks queued")
    sim_clock.advance(0.29)
    assert not sim.wait_idle(0.05) and receiver.bodies == []  # delayed
    sim_clock.advance(0.01)
    assert sim.wait_idle(20)
    stats = sim.stats()
    got = [b["deviceIds"][0]["id"] for b in receiver.bodies]
    assert stats["callbacks_dropped"] > 0 and stats["callbacks_duplicated"] > 0
    assert len(got) == 200 - stats["callbacks_dropped"] + stats["callbacks_duplicated"]
    assert len(set(got)) == 200 - stats["callbacks_dropped"]
    order = [d["iccid"] for d in devices]
    assert [i for i in got if i in set(got)] != sorted(got, key=order.index)  # out of order
    assert stats["applied_total"] == 200  # duplicates are deliveries, not applications


def test_limits_request_size_and_activations_per_minute(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    sim.configure(max_devices_per_request=5, activate_per_minute=2)
    devices = make_devices(6, state="pre-active")
    sim.seed_devices(devices)
    c = M2M(thingspace_sim)
    too_many = c.action("activate", devices, servicePlan="M2M-4G-1GB")
    assert too_many.status_code == 400 and too_many.json()["errorCode"] == rules.ERR_TOO_MANY_DEVICES
    answers = [c.action("activate", [d], servicePlan="M2M-4G-1GB") for d in devices[:3]]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["fault"]["code"] == str(rules.GW_THROTTLED)
    assert int(answers[2].headers["retry-after"]) >= 1
    no_plan = c.action("activate", devices[3:4])
    assert no_plan.status_code == 400 and no_plan.json()["errorCode"] == rules.ERR_MISSING_FIELD
    other = c.call(
        "POST",
        "devices/actions/suspend",
        {"accountName": "999", "devices": [{"deviceIds": [{"kind": "iccid", "id": devices[0]["iccid"]}]}]},
    )
    assert other.json()["errorCode"] == rules.ERR_ACCOUNT_NOT_FOUND


def test_request_status_list_and_pending_activation(thingspace_sim, sim_clock) -> None:
    sim = thingspace_sim.simulator
    sim.configure(activation_seconds=0.4)
    one, a, b = make_devices(3, state="deactive")
    sim.seed_devices([one, a, b])
    c = M2M(thingspace_sim)
    rid = c.action("activate", [one], servicePlan="M2M-4G-5GB").json()["requestId"]
    bulk = c.action("activate", [a, b], servicePlan="M2M-4G-5GB").json()["requestId"]
    wait_until(
        lambda: sim.stats()["outstanding"] == 3, timeout=5, what="both requests processed, 3 activations pending"
    )
    status = c.call("GET", f"accounts/{TS_ACCOUNT}/requests/{rid}/status").json()
    assert status == {"requestId": rid, "status": "Pending"}
    listed = c.call(
        "POST", "devices/actions/list", {"accountName": TS_ACCOUNT, "deviceId": {"kind": "iccid", "id": one["iccid"]}}
    ).json()
    info = listed["devices"][0]["carrierInformations"][0]
    assert listed["hasMoreData"] is False and info["state"] == "pending activation"
    sim_clock.advance(0.4)
    assert sim.wait_idle(5)
    assert c.call("GET", f"accounts/{TS_ACCOUNT}/requests/{rid}/status").json()["status"] == "Success"
    assert sim.device(one["iccid"]) | {} and sim.device(one["iccid"])["servicePlan"] == "M2M-4G-5GB"
    refused = c.call("GET", f"accounts/{TS_ACCOUNT}/requests/{bulk}/status")
    assert refused.status_code == 400 and refused.json()["errorCode"] == rules.ERR_STATUS_NOT_SUPPORTED
    everything = c.call("POST", "devices/actions/list", {"accountName": TS_ACCOUNT}).json()
    assert {d["carrierInformations"][0]["state"] for d in everything["devices"]} == {"active"}


def test_5000_device_bulk_change_is_quick(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    devices = make_devices(5000)
    sim.seed_devices(devices)
    c = M2M(thingspace_sim)
    c.register(rhandle)
    started = time.monotonic()
    assert c.action("deactivate", devices, reasonCode="FF").status_code == 200
    assert sim.wait_idle(30)
    assert time.monotonic() - started < 15
    assert len(receiver.wait_for(5000)) == 5000 and sim.stats()["applied_more_than_once"] == 0


def test_admin_endpoints_and_faults(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    admin = httpx.Client(base_url=thingspace_sim.base_url, timeout=5)
    seeded = admin.post("/_sim/devices", json={"devices": make_devices(2)}).json()
    assert seeded == {"seeded": 2, "devices": 2}
    iccid = make_devices(1)[0]["iccid"]
    assert admin.get(f"/_sim/devices/{iccid}").json()["device"]["state"] == "active"
    c = M2M(thingspace_sim)
    assert admin.post("/_sim/config", json={"error_rate": 1.0}).json()["error_rate"] == 1.0
    assert admin.post("/_sim/config", json={"nonsense": 1}).status_code == 400
    r = c.call("POST", "devices/actions/list", {"accountName": TS_ACCOUNT})
    assert r.status_code == 503 and r.json()["fault"]["code"] == str(rules.GW_BACKEND)
    assert admin.get("/_sim/stats").json()["injected"]["error_5xx"] >= 1
    assert admin.post("/_sim/reset").json()["total_calls"] == 0
    assert sim.config()["error_rate"] == 1.0


def test_cli_starts_the_simulator() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkchange_pipeline.simulators", "thingspace", "--port", str(port), "--devices", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    try:
        stats = wait_for_server(f"http://127.0.0.1:{port}/_sim/stats", proc).json()
        assert stats["devices"] == 3
    finally:
        proc.terminate()
        proc.wait(10)


def test_device_id_change_is_served_only_at_the_documented_path(thingspace_sim) -> None:
    """`PUT /devices/{serviceType}/actions/deviceId` (Verizon's docs and SDK); the older spelling
    `/devices/actions/deviceid` is not served: it gets the gateway's no-resource fault (400,
    900906), so a client that drifts back to it fails loudly."""
    c = M2M(thingspace_sim)
    body = {"deviceIds": [], "change4gOption": "ChangeICCID", "deviceIdsTo": []}
    real = c.call("PUT", "devices/4G/actions/deviceId", body)
    assert real.status_code == 400 and real.json()["errorCode"] == rules.ERR_MISSING_FIELD, real.text
    for old in ("devices/actions/deviceid", "devices/actions/deviceId", "devices/4G/actions/deviceid"):
        r = c.call("PUT", old, body)
        assert r.status_code == 400 and r.json()["fault"]["code"] == str(rules.GW_NO_RESOURCE), old
    assert c.call("GET", "devices/actions/list").json()["fault"]["code"] == str(rules.GW_NO_RESOURCE)


def test_account_name_is_optional_but_never_wrong(thingspace_sim) -> None:
    """Issue 17: accountName is optional on device actions (Verizon's SDK models) and absent from
    ChangeDeviceIdRequest; without it the session's account acts, a wrong one is AccountNotFound."""
    sim = thingspace_sim.simulator
    mine, theirs, swap = make_devices(3)
    theirs["accountName"] = "0000999999-00001"
    sim.seed_devices([mine, theirs, swap])
    c = M2M(thingspace_sim)
    ids = lambda d: {"deviceIds": [{"kind": "iccid", "id": d["iccid"]}]}  # noqa: E731
    assert c.call("POST", "devices/actions/suspend", {"devices": [ids(mine), ids(theirs)]}).status_code == 200
    wrong = c.call("POST", "devices/actions/restore", {"accountName": "0000999999-00001", "devices": [ids(mine)]})
    assert wrong.status_code == 400 and set(wrong.json()) == {"errorCode", "errorMessage"}
    assert wrong.json()["errorCode"] == rules.ERR_ACCOUNT_NOT_FOUND
    new_iccid = make_devices(1, start=50)[0]["iccid"]
    change = {"change4gOption": "ChangeICCID", "deviceIdsTo": [{"kind": "iccid", "id": new_iccid}], **ids(swap)}
    assert c.call("PUT", "devices/4G/actions/deviceId", change).status_code == 200
    extra = c.call("PUT", "devices/4G/actions/deviceId", {**change, "accountName": TS_ACCOUNT})
    assert extra.status_code == 400 and extra.json()["errorCode"] == rules.ERR_UNKNOWN_FIELD
    assert sim.wait_idle(5)
    assert sim.device(mine["iccid"])["state"] == "suspend"
    assert sim.device(theirs["iccid"])["state"] == "active"  # another account's device is not found
    assert sim.device(new_iccid) is not None and sim.device(swap["iccid"]) is None


def test_device_list_pages_by_largest_device_id_seen(thingspace_sim) -> None:
    """`largestDeviceIdSeen` (the `DeviceId` extended attribute of the last device seen) and
    `maxNumberOfDevices` (1..100) page the list; hasMoreData comes with 202, the last page 200."""
    sim = thingspace_sim.simulator
    sim.seed_devices(make_devices(250))
    c = M2M(thingspace_sim)
    seen: list[str] = []
    statuses, after = [], 0
    while True:
        r = c.call("POST", "devices/actions/list", {"maxNumberOfDevices": 100, "largestDeviceIdSeen": after})
        statuses.append((r.status_code, r.json()["hasMoreData"], len(r.json()["devices"])))
        page = r.json()["devices"]
        seen += [next(i["id"] for i in d["deviceIds"] if i["kind"] == "iccid") for d in page]
        if not r.json()["hasMoreData"]:
            break
        after = int(next(a["value"] for a in page[-1]["extendedAttributes"] if a["key"] == "DeviceId"))
    assert statuses == [(202, True, 100), (202, True, 100), (200, False, 50)]
    assert sorted(seen) == sorted(d["iccid"] for d in make_devices(250))
    for bad in ({"lastSeenDeviceId": "1"}, {"maxNumberOfDevices": 101}, {"largestDeviceIdSeen": "7"}):
        r = c.call("POST", "devices/actions/list", {"accountName": TS_ACCOUNT, **bad})
        assert r.status_code == 400 and r.json()["errorCode"].startswith("UnifiedWebService.INPUT_INVALID"), bad
    one = c.call("POST", "devices/actions/list", {"deviceId": {"kind": "iccid", "id": seen[7]}}).json()
    assert one["hasMoreData"] is False and len(one["devices"]) == 1


def test_logout_invalidates_the_session_token(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    c = M2M(thingspace_sim)
    r = c.call("POST", "session/logout")
    assert r.status_code == 200 and r.json() == {"sessionToken": c.session}
    after = c.call("POST", "devices/actions/list", {})
    assert after.status_code == 400 and after.json()["errorCode"] == rules.ERR_SESSION_INVALID
    assert c.call("POST", "session/logout").json()["errorCode"] == rules.ERR_SESSION_INVALID
    assert sim.stats()["logouts"] == 1 and sim.stats()["sessions_open"] == 0


def test_values_are_checked_never_filled_in_or_coerced(thingspace_sim) -> None:
    """Issue 17: deactivate needs `reasonCode` FF (the only valid code) and a JSON boolean
    `etfWaiver`; `mdnZipCode` is five digits; an identifier's `kind` is spelled in lower case; the
    device-id change serves the documented service types (4G, 3G) only. Each departure is a 400
    `{errorCode, errorMessage}` and touches no device."""
    sim = thingspace_sim.simulator
    live, dead, swap = make_devices(3)
    dead["state"] = "deactive"
    sim.seed_devices([live, dead, swap])
    c = M2M(thingspace_sim)

    def refused(answer: httpx.Response, code: str) -> None:
        assert answer.status_code == 400 and set(answer.json()) == {"errorCode", "errorMessage"}, answer.text
        assert answer.json()["errorCode"] == code, answer.text

    refused(c.action("deactivate", [live]), rules.ERR_MISSING_FIELD)
    for code in ("XX", "ff", "", None):
        refused(c.action("deactivate", [live], reasonCode=code), rules.ERR_INVALID_VALUE)
    for waiver in ("no", "false", 0, None):
        refused(c.action("deactivate", [live], reasonCode="FF", etfWaiver=waiver), rules.ERR_INVALID_VALUE)
    for zip_code in ("9880", "988011", 98801, "98801-1234", "9880a"):
        refused(c.action("activate", [dead], servicePlan="M2M-4G-1GB", mdnZipCode=zip_code), rules.ERR_INVALID_VALUE)
    upper = {"devices": [{"deviceIds": [{"kind": "ICCID", "id": live["iccid"]}]}]}
    refused(c.call("POST", "devices/actions/suspend", upper), rules.ERR_INVALID_REQUEST)
    refused(
        c.call("POST", "devices/actions/list", {"deviceId": {"kind": "Iccid", "id": live["iccid"]}}),
        rules.ERR_INVALID_REQUEST,
    )
    new_iccid = make_devices(1, start=60)[0]["iccid"]
    change = {
        "deviceIds": [{"kind": "iccid", "id": swap["iccid"]}],
        "change4gOption": "ChangeICCID",
        "deviceIdsTo": [{"kind": "iccid", "id": new_iccid}],
    }
    for service_type in ("4g", "5G", "LTE", "serviceType6"):
        refused(c.call("PUT", f"devices/{service_type}/actions/deviceId", change), rules.ERR_SERVICE_TYPE)
    assert sim.wait_idle(5)
    assert [sim.device(d["iccid"])["state"] for d in (live, dead, swap)] == ["active", "deactive", "active"]
    assert sim.device(new_iccid) is None and not sim.applied_counts
    assert c.action("deactivate", [live], reasonCode="FF", etfWaiver=True).status_code == 200
    assert c.action("activate", [dead], servicePlan="M2M-4G-1GB", mdnZipCode="98801").status_code == 200
    assert c.call("PUT", "devices/3G/actions/deviceId", change).status_code == 200
    assert sim.wait_idle(5)
    assert [sim.device(d["iccid"])["state"] for d in (live, dead)] == ["deactive", "active"]
    assert sim.device(new_iccid) is not None
