"""The Telegence simulator over real HTTP: auth, line PATCH rules, inconsistent error bodies, the
eSIM refusal, activations (batch limit, pending/active/rejected/forever, replay), the subscriber
list, fault injection, admin endpoints and the CLI."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from bulkchange_pipeline.simulators.__main__ import cli
from bulkchange_pipeline.simulators.telegence_rules import (
    MAX_ACTIVATION_LINES,
    RESOURCE_UNAVAILABLE,
)
from bulkchange_pipeline_tests.simulators.telegence_fixtures import (
    TELEGENCE_APP_ID,
    TELEGENCE_APP_SECRET,
    TELEGENCE_BAN,
    activation_changes,
    seed_lines,
)

pytestmark = pytest.mark.timeout(60)

HEADERS = {"app-id": TELEGENCE_APP_ID, "app-secret": TELEGENCE_APP_SECRET, "Accept": "application/json"}
LINE = "sp/mobility/lineconfig/api/v1/service"
ACT = "sp/mobilityactivations/api/v1/serviceactivation"


def client(handle) -> httpx.Client:
    return httpx.Client(base_url=handle.base_url + "/", headers=HEADERS, timeout=5.0)


def chars(detail: dict) -> dict[str, str]:
    return {c["name"]: c["value"] for c in detail["serviceCharacteristic"]}


def activation_body(n: int, start: int = 100_000) -> list[dict]:
    out = []
    for change in activation_changes(n, start=start):
        out.append(
            {
                "billingAccount": {"id": TELEGENCE_BAN},
                "service": {
                    "serviceCharacteristic": [
                        {"name": "singleUserCode", "value": change.target["carrier_rate_plan"]},
                        {"name": "serviceZipCode", "value": "75201"},
                        {"name": "equipmentType", "value": "G"},
                        {"name": "deviceTechnologyType", "value": "UMTS"},
                        {"name": "IMEI", "value": change.imei},
                        {"name": "sim", "value": change.iccid},
                    ],
                    "serviceSpecification": {"id": "12", "href": "Mobility Services"},
                },
            }
        )
    return out


def test_auth_needs_both_headers(telegence_sim) -> None:
    number = seed_lines(telegence_sim.simulator, 1)[0]["msisdn"]
    url = f"{telegence_sim.base_url}/{LINE}/{number}"
    assert httpx.get(url).status_code == 401
    r = httpx.get(url, headers={"app-id": TELEGENCE_APP_ID, "app-secret": "wrong"})
    assert r.status_code == 401 and "Invalid" in r.json()["errorDescription"]
    r = httpx.get(url, headers=HEADERS)
    assert r.status_code == 200 and chars(r.json())["subscriberStatus"] == "A"
    assert telegence_sim.simulator.stats()["auth_failures"] == 2


def test_status_modes_follow_a_s_c_and_repeat_is_a_no_op(telegence_sim) -> None:
    sim = telegence_sim.simulator
    number = seed_lines(sim, 1)[0]["msisdn"]
    with client(telegence_sim) as c:
        for mode, expected in (("S", "S"), ("S", "S"), ("R", "A"), ("C", "C")):
            r = c.patch(f"{LINE}/{number}", json={"mode": mode, "reasonCode": "CR"})
            assert r.status_code == 200, r.text
            assert chars(r.json())["subscriberStatus"] == expected
        r = c.patch(f"{LINE}/{number}", json={"mode": "R"})
        assert r.status_code == 400 and "reasonCode" in r.text
        for other in ("restore", "suspend", "A"):  # one spelling: the letters only
            assert c.patch(f"{LINE}/{number}", json={"mode": other, "reasonCode": "CR"}).status_code == 400
    assert sim.applied_counts[number] == 3  # the repeated suspend changed nothing


def test_cancelled_line_refuses_in_rotating_error_shapes(telegence_sim) -> None:
    sim = telegence_sim.simulator
    number = seed_lines(sim, 1, subscriberStatus="C")[0]["msisdn"]
    seen: set[str] = set()
    with client(telegence_sim) as c:
        for _ in range(4):
            r = c.patch(f"{LINE}/{number}", json={"mode": "R", "reasonCode": "CR"})
            assert r.status_code == 400
            if r.headers["content-type"].startswith("text/plain"):
                assert "cancelled" in r.text
                seen.add("text")
            else:
                body = r.json()
                key = next(k for k in ("responseMessage", "errorDescription", "Description") if k in body)
                assert "cancelled" in body[key]
                seen.add(key)
    assert seen == {"text", "responseMessage", "errorDescription", "Description"}
    assert sim.device(number)["subscriberStatus"] == "C" and sim.applied_counts[number] == 0


def swap_body(line: dict, **values: str) -> dict:
    """An equipment change as the public sources send it: all six characteristics, the line's
    current values (as seeded) unless `values` replaces them."""
    pairs = {
        "reasonCode": "CUST_OWN_EQU",
        "serviceZipCode": "75001",
        "singleUserCode": "IOTSOC1GB",
        "technologyType": "LTE",
        "IMEI": line["imei"],
        "sim": line["iccid"],
        **values,
    }
    return {"serviceCharacteristic": [{"name": k, "value": v} for k, v in pairs.items()]}


def test_plan_sim_imei_contact_and_cost_center(telegence_sim) -> None:
    sim = telegence_sim.simulator
    lines = seed_lines(sim, 2) + seed_lines(sim, 1, start=2, esim=True)
    new = activation_changes(1, start=555)[0]
    today = sim.clock.now().date().isoformat() + "Z"
    plan = {"effectiveDate": today, "serviceCharacteristic": [{"name": "singleUserCode", "value": "IOTSOC5GB"}]}
    with client(telegence_sim) as c:
        r = c.patch(f"{LINE}/{lines[0]['msisdn']}", json=plan)
        assert chars(r.json())["singleUserCode"] == "IOTSOC5GB"
        r = c.patch(f"{LINE}/{lines[0]['msisdn']}", json={"serviceCharacteristic": plan["serviceCharacteristic"]})
        assert r.status_code == 400 and "effectiveDate" in r.text  # every source sends the date
        r = c.patch(
            f"{LINE}/{lines[0]['msisdn']}",
            json={**plan, "serviceCharacteristic": [{"name": "singleUserCode", "value": "NOPE"}]},
        )
        assert r.status_code == 400 and "NOPE" in r.text
        swap = swap_body(lines[1], IMEI=new.imei, sim=new.iccid)
        r = c.patch(f"{LINE}/{lines[1]['msisdn']}", json=swap)
        assert r.status_code == 200
        assert (chars(r.json())["sim"], chars(r.json())["BLIMEI"]) == (new.iccid, new.imei)
        r = c.patch(f"{LINE}/{lines[0]['msisdn']}", json=swap_body(lines[0], sim=new.iccid, singleUserCode="IOTSOC5GB"))
        assert r.status_code == 400 and "already in use" in r.text  # that SIM is now taken
        r = c.patch(f"{LINE}/{lines[2]['msisdn']}", json=swap_body(lines[2], IMEI=lines[0]["imei"]))
        assert r.status_code == 404
        assert set(r.json()) == {"id", "description"} and r.json()["description"] == "/service/"
        r = c.patch(
            f"{LINE}/{lines[0]['msisdn']}",
            json={
                "serviceCharacteristic": [
                    {"name": "contactName", "value": "Dock 7"},
                    {"name": "costCenter", "value": "CC-42"},
                ]
            },
        )
        assert (chars(r.json())["contactName"], chars(r.json())["costCenter"]) == ("Dock 7", "CC-42")
    assert sim.device(new.iccid)["subscriberNumber"] == lines[1]["msisdn"]
    assert sim.applied_counts[lines[0]["msisdn"]] == 2 and sim.applied_counts[lines[2]["msisdn"]] == 0


def test_equipment_change_needs_every_characteristic_in_one_spelling(telegence_sim) -> None:
    """Issue 17: the simulator never fills in what a swap leaves out, and refuses the activation's
    `deviceTechnologyType` in its place, in Telegence's error shapes."""
    sim = telegence_sim.simulator
    line = seed_lines(sim, 1)[0]
    new_imei = activation_changes(1, start=556)[0].imei
    full = swap_body(line, IMEI=new_imei)
    with client(telegence_sim) as c:
        for name in ("reasonCode", "serviceZipCode", "singleUserCode", "technologyType", "IMEI", "sim"):
            body = {"serviceCharacteristic": [x for x in full["serviceCharacteristic"] if x["name"] != name]}
            r = c.patch(f"{LINE}/{line['msisdn']}", json=body)
            assert r.status_code == 400, name
            assert name in r.text or name == "reasonCode", r.text
            assert r.headers["content-type"].startswith(("application/json", "text/plain"))
        renamed = [
            {"name": "deviceTechnologyType", "value": x["value"]} if x["name"] == "technologyType" else x
            for x in full["serviceCharacteristic"]
        ]
        r = c.patch(f"{LINE}/{line['msisdn']}", json={"serviceCharacteristic": renamed})
        assert r.status_code == 400 and "deviceTechnologyType" in r.text
        assert sim.device(line["msisdn"])["BLIMEI"] == line["imei"] and sim.applied_counts[line["msisdn"]] == 0
        r = c.patch(f"{LINE}/{line['msisdn']}", json=full)
        assert r.status_code == 200 and chars(r.json())["BLIMEI"] == new_imei


def test_future_effective_date_is_scheduled(telegence_sim) -> None:
    sim = telegence_sim.simulator
    number = seed_lines(sim, 1)[0]["msisdn"]
    with client(telegence_sim) as c:
        r = c.patch(
            f"{LINE}/{number}",
            json={
                "effectiveDate": "2099-01-01Z",
                "serviceCharacteristic": [{"name": "singleUserCode", "value": "IOTSOC5GB"}],
            },
        )
        assert r.status_code == 200
        assert (
            c.patch(
                f"{LINE}/{number}", json={"effectiveDate": "01/02/2099", "mode": "S", "reasonCode": "CR"}
            ).status_code
            == 400
        )
    assert sim.device(number)["singleUserCode"] == "IOTSOC1GB" and len(sim.scheduled[number]) == 1


def test_activation_pending_then_active_rejected_or_forever(telegence_sim) -> None:
    sim = telegence_sim.simulator
    body = activation_body(3)
    rejected_iccid = chars(body[1]["service"])["sim"]
    forever_imei = chars(body[2]["service"])["IMEI"]
    sim.configure(reject_iccids=[rejected_iccid], pending_imeis=[forever_imei])
    with client(telegence_sim) as c:
        r = c.post(ACT, json=body)
        assert r.status_code == 200
        ids = [item["id"] for item in r.json()]
        assert len(set(ids)) == 3
        assert [i["id"] for i in c.post(ACT, json=body).json()] == ids  # replayed, not re-applied
        states = []
        for _ in range(3):
            states.append([c.get(f"{ACT}/{i}").json()[0]["service"]["status"] for i in ids])
        last = [c.get(f"{ACT}/{i}").json()[0] for i in ids]
    assert states[0] == states[1] == ["pending"] * 3
    assert states[2] == ["active", "rejected", "pending"]
    number = last[0]["service"]["subscriberNumber"]
    assert len(number) == 10 and sim.device(number)["singleUserCode"] == "IOTSOC5GB"
    assert last[1]["service"]["error"]["description"] == sim.rejection_reason
    assert last[1]["interactionStatus"] == "Failed" and last[2]["service"]["subscriberNumber"] is None
    assert all(sim.applied_counts[chars(b["service"])["sim"]] == 1 for b in body)


def test_activation_limits_and_validation(telegence_sim) -> None:
    with client(telegence_sim) as c:
        r = c.post(ACT, json=activation_body(MAX_ACTIVATION_LINES + 1))
        assert r.status_code == 400 and "200" in r.text
        bad = activation_body(1)
        bad[0]["service"]["serviceCharacteristic"][5]["value"] = "8901170400000000001"
        assert c.post(ACT, json=bad).status_code == 400
        for drop in ("equipmentType", "deviceTechnologyType"):  # AMOP always sends both
            bad = activation_body(1)
            bad[0]["service"]["serviceCharacteristic"] = [
                x for x in bad[0]["service"]["serviceCharacteristic"] if x["name"] != drop
            ]
            assert c.post(ACT, json=bad).status_code == 400
        bad = activation_body(1)
        bad[0]["service"]["serviceCharacteristic"][3]["name"] = "technologyType"  # the swap's name
        assert c.post(ACT, json=bad).status_code == 400
        assert c.post(ACT, json={"not": "an array"}).status_code == 400
        assert c.get(f"{ACT}/no-such-id").status_code == 404
    assert telegence_sim.simulator.stats()["activations"] == {}


def test_subscriber_list_pages_with_headers(telegence_sim) -> None:
    """Both paging headers required, no filter spelling guessed, cancelled lines left out."""
    sim = telegence_sim.simulator
    seed_lines(sim, 7)
    seed_lines(sim, 2, start=50, subscriberStatus="S")
    seed_lines(sim, 1, start=60, subscriberStatus="C")
    with client(telegence_sim) as c:
        r = c.get(LINE, headers={"current-page": "2", "page-size": "4"})
        assert r.status_code == 200 and len(r.json()) == 4
        assert r.headers["page-total"] == "3" and r.headers["refresh-timestamp"]
        r = c.get(LINE, headers={"current-page": "3", "page-size": "4"})
        assert [e["subscriberNumberStatus"] for e in r.json()] == ["S"]  # 9 listed: the C line is not
        assert set(r.json()[0]) == {
            "subscriberNumber",
            "subscriberNumberStatus",
            "billingAccountNumber",
            "foundationAccountNumber",
        }
        for headers in ({"page-size": "4"}, {"current-page": "1"}, {}, {"current-page": "1", "page-size": "0"}):
            assert c.get(LINE, headers=headers).status_code == 400, headers
        paged = {"current-page": "1", "page-size": "4"}
        assert c.get(LINE, headers=paged, params={"subscriberStatus": "S"}).status_code == 400


def test_injected_5xx_alternate_between_gateway_and_resource_errors(telegence_sim) -> None:
    sim = telegence_sim.simulator
    number = seed_lines(sim, 1)[0]["msisdn"]
    sim.configure(error_rate=1.0)
    with client(telegence_sim) as c:
        answers = [c.get(f"{LINE}/{number}") for _ in range(4)]
    assert {r.status_code for r in answers} == {500, 503}
    assert any(RESOURCE_UNAVAILABLE in r.text for r in answers if r.status_code == 503)
    assert sim.stats()["injected"]["error_5xx"] == 4


def test_admin_endpoints_and_counters(telegence_sim) -> None:
    r = httpx.post(
        telegence_sim.base_url + "/_sim/devices",
        json={"devices": [{"msisdn": "2145550999", "iccid": "89011704000000009990"}]},
    )
    assert r.json()["seeded"] == 1
    r = httpx.get(telegence_sim.base_url + "/_sim/devices/2145550999")
    assert r.json()["device"]["sim"] == "89011704000000009990" and r.json()["applied"] == 0
    r = httpx.post(telegence_sim.base_url + "/_sim/config", json={"activation_polls": 5})
    assert r.json()["activation_polls"] == 5
    assert httpx.post(telegence_sim.base_url + "/_sim/config", json={"nope": 1}).status_code == 400


def test_cli_subcommand_is_registered() -> None:
    result = CliRunner().invoke(cli, ["telegence", "--help"])
    assert result.exit_code == 0, result.output
    assert "--port" in result.output and "8912" in result.output
