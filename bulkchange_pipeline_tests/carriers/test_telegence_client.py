"""TelegenceClient against a running Telegence simulator: every line-update kind, Telegence's
inconsistent error bodies, transient faults (exactly once), 1,000-line activations polled to the
end, already_applied, limits and redaction; and the username/cost-center edit's Rev.io half
against a running Rev.io simulator (its four outcome rules). The simulators' counts are the proof
of exactly-once."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from bulkchange_pipeline.carriers import build_adapter
from bulkchange_pipeline.carriers.base import (
    BusinessCarrierError,
    CarrierAdapter,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    WritesDisabledError,
)
from bulkchange_pipeline.carriers.http import _parse_body
from bulkchange_pipeline.carriers.revio import RevioClient
from bulkchange_pipeline.carriers.telegence import TelegenceClient
from bulkchange_pipeline.carriers.telegence_errors import (
    ESIM_REQUIRED_CODE,
    classify_telegence_response,
)
from bulkchange_pipeline.carriers.telegence_wire import (
    ACTIVATION_BATCH_SIZE,
    line_update,
    telegence_date,
)
from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus
from bulkchange_pipeline_tests.simulators.revio_fixtures import (
    CUSTOMER_A,
    REVIO_PASSWORD,
    REVIO_SUBSCRIPTION_KEY,
    REVIO_USER,
    revio_account,
    seed_service,
)
from bulkchange_pipeline_tests.simulators.telegence_fixtures import (
    TELEGENCE_APP_SECRET,
    activation_changes,
    seed_lines,
    telegence_account,
)

pytestmark = pytest.mark.timeout(90)


def change(i: int, msisdn: str | None, change_type: int = ChangeType.STATUS_UPDATE, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, None, None, msisdn, None, target)


def run(client: TelegenceClient, work: Callable[[TelegenceClient], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def apply(client: TelegenceClient, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
    return run(client, lambda c: c.apply(changes))


def all_logs(results: Sequence[DeviceResult | None]) -> list[LogEntry]:
    return [entry for r in results if r is not None for entry in r.log]


def assert_no_secret(results: Sequence[DeviceResult | None]) -> None:
    logs = all_logs(results)
    assert logs
    for entry in logs:
        assert TELEGENCE_APP_SECRET not in entry.request_text + entry.response_text


# -- the pure parts -------------------------------------------------------------------------------


def _response(status: int, content: str, media: str = "application/json") -> httpx.Response:
    return httpx.Response(
        status, content=content.encode(), headers={"content-type": media}, request=httpx.Request("PATCH", "http://t/x")
    )


@pytest.mark.parametrize(
    "status,content,media,expected",
    [
        (
            400,
            '{"responseCode":"400","responseMessage":"Subscriber is cancelled"}',
            "application/json",
            "Subscriber is cancelled",
        ),
        (
            400,
            '{"errorCode":"ERR400","errorDescription":"Invalid singleUserCode X"}',
            "application/json",
            "[ERR400] Invalid singleUserCode X",
        ),
        (400, '{"Code":400,"Description":"Cannot suspend"}', "application/json", "Cannot suspend"),
        (400, "Subscriber 2145550000 not eligible", "text/plain", "Subscriber 2145550000 not eligible"),
        (409, '{"error":{"message":"nested reason"}}', "application/json", "nested reason"),
    ],
)
def test_inconsistent_error_bodies_read_as_one_clear_message(status, content, media, expected) -> None:
    response = _response(status, content, media)
    error = classify_telegence_response(response, _parse_body(response))
    assert isinstance(error, BusinessCarrierError)
    assert expected in str(error) and "{" not in error.message


def test_esim_not_found_and_resource_unavailable_are_recognised() -> None:
    response = _response(404, '{"id":"3f1c0b7e-1111-4a4a-9999-0e0e0e0e0e0e","description":"/service/"}')
    error = classify_telegence_response(response, _parse_body(response))
    assert isinstance(error, BusinessCarrierError) and error.code == ESIM_REQUIRED_CODE
    assert "eSIM" in error.message
    for status in (503, 400):  # the phrase is transient whatever status carries it
        response = _response(status, '{"responseMessage":"A Resource Required By Service Is Not Available"}')
        assert isinstance(classify_telegence_response(response, _parse_body(response)), TransientCarrierError)
    response = _response(200, '{"subscriberNumber": "21455')
    assert isinstance(classify_telegence_response(response, _parse_body(response)), TransientCarrierError)


def test_line_update_bodies() -> None:
    body, values, held = line_update(change(1, "2145550000", status="S", effective_date="2030-05-01"))
    assert body == {"mode": "S", "reasonCode": "CR", "effectiveDate": "2030-05-01Z"}
    assert values == {"status": "S"} and held == {"subscriberStatus": "S"}
    body, _, _ = line_update(change(1, "2145550000", status="C", reason_code="FRD"), "XX")
    assert body["mode"] == "C" and body["reasonCode"] == "FRD"
    body, values, _ = line_update(
        change(
            1,
            "x",
            ChangeType.CARRIER_RATE_PLAN_CHANGE,
            carrier_rate_plan="P1",
            effective_date="2030-05-01T10:00:00+00:00",
        )
    )
    assert body == {
        "effectiveDate": "2030-05-01Z",
        "serviceCharacteristic": [{"name": "singleUserCode", "value": "P1"}],
    }
    body, _, _ = line_update(change(1, "x", status="A", effective_date="2001-01-01"))
    assert body["effectiveDate"] == telegence_date() and body["mode"] == "R"  # past -> today
    with pytest.raises(ValueError, match="A, S or C"):
        line_update(change(1, "x", status="ACTIVATED"))


# -- line updates against the simulator ----------------------------------------------------------


def test_each_line_update_kind_is_applied_once(telegence_sim) -> None:
    sim = telegence_sim.simulator
    lines = seed_lines(sim, 6)
    sim.seed_devices([{"subscriberNumber": lines[1]["msisdn"], "sim": lines[1]["iccid"], "subscriberStatus": "S"}])
    new = activation_changes(1, start=777)[0]
    changes = [
        change(1, lines[0]["msisdn"], ChangeType.STATUS_UPDATE, status="S"),
        change(2, lines[1]["msisdn"], ChangeType.STATUS_UPDATE, status="A", current_status="S"),
        change(3, lines[2]["msisdn"], ChangeType.STATUS_UPDATE, status="C", reason_code="NP"),
        change(4, lines[3]["msisdn"], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOTSOC5GB"),
        change(5, lines[4]["msisdn"], ChangeType.CHANGE_ICCID_AND_IMEI, new_iccid=new.iccid, new_imei=new.imei),
        change(6, lines[5]["msisdn"], ChangeType.EDIT_USERNAME_COST_CENTER, username="Dock 7", cost_center="CC-42"),
    ]
    results = apply(TelegenceClient(telegence_account(telegence_sim)), changes)
    assert [r.status for r in results] == [DeviceChangeStatus.PROCESSED] * 6, [r.detail for r in results]
    assert [r.new_values for r in results] == [
        {"status": "S"},
        {"status": "A"},
        {"status": "C"},
        {"carrier_rate_plan": "IOTSOC5GB"},
        {"iccid": new.iccid, "imei": new.imei},
        {"username": "Dock 7", "cost_center": "CC-42"},
    ]
    held = [sim.device(line["msisdn"]) for line in lines]
    assert [h["subscriberStatus"] for h in held[:3]] == ["S", "A", "C"]
    assert held[3]["singleUserCode"] == "IOTSOC5GB"
    assert (held[4]["sim"], held[4]["BLIMEI"]) == (new.iccid, new.imei)
    assert (held[5]["contactName"], held[5]["costCenter"]) == ("Dock 7", "CC-42")
    assert all(sim.applied_counts[line["msisdn"]] == 1 for line in lines)
    assert_no_secret(results)
    request = results[0].log[0].request_text
    assert "app-id: amop-telegence-app" in request and "app-secret: ***" in request
    assert "accept: application/json" in request.lower()


def test_refusals_become_api_failed_with_a_clear_reason(telegence_sim) -> None:
    sim = telegence_sim.simulator
    cancelled = seed_lines(sim, 4, subscriberStatus="C")
    esim = seed_lines(sim, 1, start=10, esim=True)[0]
    active = seed_lines(sim, 1, start=20)[0]
    new = activation_changes(1, start=888)[0]
    changes = [
        change(i, line["msisdn"], ChangeType.STATUS_UPDATE, status="A") for i, line in enumerate(cancelled, start=1)
    ]
    changes += [
        change(5, esim["msisdn"], ChangeType.CHANGE_ICCID_AND_IMEI, new_iccid=new.iccid),
        change(6, active["msisdn"], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="NO-SUCH-SOC"),
        change(7, "2145559999", ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOTSOC5GB"),
    ]
    results = apply(TelegenceClient(telegence_account(telegence_sim, max_concurrency=1)), changes)
    assert [r.status for r in results] == [DeviceChangeStatus.API_FAILED] * 7
    for r in results[:4]:  # four different error shapes, one readable reason
        assert "is cancelled" in r.detail and "{" not in r.detail and "responseMessage" not in r.detail
    assert "eSIM" in results[4].detail
    assert "Invalid singleUserCode NO-SUCH-SOC" in results[5].detail
    assert "2145559999 not found" in results[6].detail
    assert sim.stats()["applied_total"] == 0 and sim.stats()["business_refusals"] == 7
    assert_no_secret(results)


def test_rows_without_msisdn_or_target_fail_without_a_call(telegence_sim) -> None:
    results = apply(
        TelegenceClient(telegence_account(telegence_sim)),
        [
            change(1, None, ChangeType.STATUS_UPDATE, status="S"),
            change(2, "2145550000", ChangeType.CARRIER_RATE_PLAN_CHANGE),
            change(3, "2145550000", ChangeType.STATUS_UPDATE, status="deactivated"),
        ],
    )
    assert [r.status for r in results] == [DeviceChangeStatus.API_FAILED] * 3
    assert "MSISDN" in results[0].detail and "carrier_rate_plan" in results[1].detail
    assert telegence_sim.simulator.total_calls == 0


def test_transient_faults_still_end_processed_exactly_once(telegence_sim) -> None:
    sim = telegence_sim.simulator
    sim.configure(error_rate=0.05, timeout_rate=0.03, malformed_rate=0.02, timeout_hold_seconds=0.6, seed=11)
    lines = seed_lines(sim, 200)
    changes = [
        change(i, line["msisdn"], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOTSOC5GB")
        for i, line in enumerate(lines, start=1)
    ]
    account = telegence_account(telegence_sim, timeout_seconds=0.3, max_attempts=6)
    results = apply(TelegenceClient(account), changes)
    assert [r.status for r in results] == [DeviceChangeStatus.PROCESSED] * 200, {r.detail for r in results}
    stats = sim.stats()
    assert stats["injected"]["error_5xx"] > 0 and stats["injected"]["timeout"] > 0
    assert all(sim.applied_counts[line["msisdn"]] == 1 for line in lines)
    assert stats["applied_more_than_once"] == 0
    assert any("attempt 2" in e.description for e in all_logs(results))
    assert_no_secret(results)


def test_concurrency_stays_within_the_account_limit(telegence_sim) -> None:
    sim = telegence_sim.simulator
    sim.configure(latency_ms=20, max_concurrency=3)
    lines = seed_lines(sim, 30)
    changes = [change(i, line["msisdn"], ChangeType.STATUS_UPDATE, status="S") for i, line in enumerate(lines)]
    results = apply(TelegenceClient(telegence_account(telegence_sim, max_concurrency=3)), changes)
    assert {r.status for r in results} == {DeviceChangeStatus.PROCESSED}
    account = next(iter(sim.stats()["accounts"].values()))
    assert account["peak_concurrency"] == 3 and account["concurrency_refusals"] == 0


def test_writes_disabled_sends_nothing(telegence_sim) -> None:
    client = TelegenceClient(telegence_account(telegence_sim, write_enabled=False))
    with pytest.raises(WritesDisabledError):
        apply(client, [change(1, "2145550000", status="S")])
    assert telegence_sim.simulator.total_calls == 0


def test_already_applied_reads_the_subscriber_back(telegence_sim) -> None:
    sim = telegence_sim.simulator
    lines = seed_lines(sim, 3, subscriberStatus="S", singleUserCode="IOTSOC5GB")
    checks = [
        change(1, lines[0]["msisdn"], ChangeType.STATUS_UPDATE, status="S"),
        change(2, lines[1]["msisdn"], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOTSOC1GB"),
        change(3, lines[2]["msisdn"], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOTSOC5GB"),
        change(4, lines[2]["msisdn"], ChangeType.CHANGE_ICCID_AND_IMEI, new_iccid=lines[2]["iccid"]),
    ]
    answers = run(TelegenceClient(telegence_account(telegence_sim)), lambda c: c.already_applied(checks))
    ok = DeviceChangeStatus.PROCESSED
    assert [a.status if a else None for a in answers] == [ok, None, ok, ok]
    assert answers[0].new_values == {"status": "S"}
    assert sim.stats()["applied_total"] == 0


# -- username/cost-center edits reach Rev.io ------------------------------------------------------

EDIT_VALUES = {"username": "Dock 7", "cost_center": "CC-42"}
EDIT_SUMMARY = "username=Dock 7, cost_center=CC-42"


def edit(i: int, msisdn: str, rev: bool) -> DeviceChange:
    """A username/cost-center edit of a line; `rev`: our database says it has an active Rev service."""
    return DeviceChange(
        i,
        i,
        ChangeType.EDIT_USERNAME_COST_CENTER,
        None,
        None,
        msisdn,
        None,
        dict(EDIT_VALUES),
        has_active_rev_service=rev,
    )


def billed(telegence_sim, revio_sim, **revio_overrides: Any) -> TelegenceClient:
    """A Telegence client whose tenant has a Rev.io account (the billing companion)."""
    return TelegenceClient(
        telegence_account(telegence_sim), billing=RevioClient(revio_account(revio_sim, **revio_overrides))
    )


def rev_service(revio_sim, service_id: int) -> tuple[str | None, str | None]:
    """(description, cost-center field value) of a Rev service in the simulator."""
    record = revio_sim.simulator.book.services[service_id]
    return record["description"], {f["label"]: f["value"] for f in record["fields"]}.get("Cost Center")


def test_edit_updates_the_rev_service_of_lines_that_have_one(telegence_sim, revio_sim) -> None:
    tg, rev = telegence_sim.simulator, revio_sim.simulator
    lines = seed_lines(tg, 9)
    with_rev = {i: seed_service(rev, line["msisdn"], CUSTOMER_A) for i, line in enumerate(lines[:6])}
    # A service Rev.io holds for a line our database says has none: not our business, not called.
    unflagged = seed_service(rev, lines[6]["msisdn"], CUSTOMER_A)
    # 5 calls per one-second window (few enough that a loaded machine still exceeds it); the client's own limiter is off, so it runs into 429s and
    # must wait the hundredths of a second each answer states.
    rev.configure(calls_per_minute=300, whole_second_waits=False)
    changes = [edit(i, line["msisdn"], rev=i < 6) for i, line in enumerate(lines)]
    results = apply(billed(telegence_sim, revio_sim), changes)

    assert [r.status for r in results] == [DeviceChangeStatus.PROCESSED] * 9, [r.detail for r in results]
    assert all(r.new_values == EDIT_VALUES for r in results)
    for i, sid in with_rev.items():
        assert results[i].detail == f"applied: {EDIT_SUMMARY}; Rev.io service {sid} updated"
        assert rev_service(revio_sim, sid) == ("Dock 7", "CC-42")
        assert any(
            e.description.startswith(f"Rev.io PATCH Services {sid} (description, cost center)")
            and e.response_status == 200
            for e in results[i].log
        )  # "(attempt 2)" after a 429
    assert [r.detail for r in results[6:]] == [f"applied: {EDIT_SUMMARY}"] * 3
    assert rev_service(revio_sim, unflagged) == (None, None)
    assert rev.stats()["over_limit_answers"] > 0
    # Every exchange with Rev.io (429s included) is logged on the row it was for; none on the others.
    rev_logs = [e for e in all_logs(results) if e.description.startswith("Rev.io")]
    assert len(rev_logs) == rev.stats()["total_calls"]
    assert not any(e.description.startswith("Rev.io") for r in results[6:] for e in r.log)
    assert all(tg.device(line["msisdn"])["contactName"] == "Dock 7" for line in lines)
    assert all(tg.applied_counts[line["msisdn"]] == 1 for line in lines)
    token = base64.b64encode(f"{REVIO_USER}:{REVIO_PASSWORD}".encode()).decode()
    texts = [e.request_text + e.response_text for e in all_logs(results)]
    for secret in (TELEGENCE_APP_SECRET, REVIO_PASSWORD, REVIO_SUBSCRIPTION_KEY, token):
        assert not any(secret in t for t in texts), secret


def test_edit_refused_by_telegence_never_calls_rev(telegence_sim, revio_sim) -> None:
    sid = seed_service(revio_sim.simulator, "2145559999", CUSTOMER_A)
    cancelled = seed_lines(telegence_sim.simulator, 1, subscriberStatus="C")[0]
    seed_service(revio_sim.simulator, cancelled["msisdn"], CUSTOMER_A)
    results = apply(
        billed(telegence_sim, revio_sim), [edit(1, "2145559999", rev=True), edit(2, cancelled["msisdn"], rev=True)]
    )
    assert [r.status for r in results] == [DeviceChangeStatus.API_FAILED] * 2
    assert "2145559999 not found" in results[0].detail and "is cancelled" in results[1].detail
    assert "Rev.io" not in results[0].detail + results[1].detail
    assert revio_sim.simulator.total_calls == 0 and rev_service(revio_sim, sid) == (None, None)


def test_edit_that_rev_does_not_take_is_api_failed_saying_telegence_was_updated(telegence_sim, revio_sim) -> None:
    tg, rev = telegence_sim.simulator, revio_sim.simulator
    no_field, no_service, locked_out = seed_lines(tg, 3)
    rev.configure(service_fields=[])  # a Rev tenant without a cost-center custom field
    bare = seed_service(rev, no_field["msisdn"], CUSTOMER_A)
    rev.configure(service_fields=["Cost Center"])
    seed_service(rev, locked_out["msisdn"], CUSTOMER_A)
    results = apply(
        billed(telegence_sim, revio_sim),
        [edit(1, no_field["msisdn"], rev=True), edit(2, no_service["msisdn"], rev=True)],
    )
    refused = apply(
        billed(telegence_sim, revio_sim, extra={"subscription_key": "revoked-key"}),
        [edit(3, locked_out["msisdn"], rev=True)],
    )

    assert [r.status for r in results + refused] == [DeviceChangeStatus.API_FAILED] * 3
    assert results[0].detail == (
        f"Telegence updated ({EDIT_SUMMARY}); Rev.io service {bare} not updated: it has no "
        "cost-center custom field (labelled 'Cost Center 1' or 'Cost Center') to hold the cost center"
    )
    assert results[1].detail == (
        f"Telegence updated ({EDIT_SUMMARY}); Rev.io not updated: Rev.io "
        f"has no active service for number {no_service['msisdn']}"
    )
    assert refused[0].detail.startswith(
        f"Telegence updated ({EDIT_SUMMARY}); Rev.io not updated: "
        "its service could not be looked up: Rev.io rejected the credentials"
    )
    assert all(r.new_values == {} for r in results + refused)  # our database keeps the old values
    assert all(
        tg.device(line["msisdn"])["contactName"] == "Dock 7" for line in (no_field, no_service, locked_out)
    )  # Telegence did take it
    assert rev_service(revio_sim, bare) == (None, None)  # nothing half-applied at Rev.io
    assert any(e.request_text.startswith("GET") and e.has_errors for e in refused[0].log)

    # Once Rev.io holds the service, a retry completes the change; Telegence sees a no-op.
    sid = seed_service(rev, no_service["msisdn"], CUSTOMER_A)
    again = apply(billed(telegence_sim, revio_sim), [edit(2, no_service["msisdn"], rev=True)])
    assert again[0].status == DeviceChangeStatus.PROCESSED and rev_service(revio_sim, sid) == ("Dock 7", "CC-42")
    assert tg.applied_counts[no_service["msisdn"]] == 1


def test_edit_for_a_tenant_without_rev_account_skips_billing(telegence_sim) -> None:
    line = seed_lines(telegence_sim.simulator, 1)[0]
    results = apply(TelegenceClient(telegence_account(telegence_sim)), [edit(1, line["msisdn"], rev=True)])
    assert results[0].status == DeviceChangeStatus.PROCESSED and results[0].new_values == EDIT_VALUES
    assert results[0].detail == (f"applied: {EDIT_SUMMARY}; Rev.io update skipped: the tenant has no Rev.io account")


def test_already_applied_edit_needs_rev_to_show_it_too(telegence_sim, revio_sim) -> None:
    tg, rev = telegence_sim.simulator, revio_sim.simulator
    done, half = seed_lines(tg, 2, contactName="Dock 7", costCenter="CC-42")
    finished = seed_service(rev, done["msisdn"], CUSTOMER_A)
    rev.book.patch_service(
        finished,
        [
            {"op": "replace", "path": "/description", "value": "Dock 7"},
            {"op": "replace", "path": "/fields/0/value", "value": "CC-42"},
        ],
    )
    seed_service(rev, half["msisdn"], CUSTOMER_A)  # a crash came between the two halves
    checks = [edit(1, done["msisdn"], rev=True), edit(2, half["msisdn"], rev=True), edit(3, half["msisdn"], rev=False)]
    answers = run(billed(telegence_sim, revio_sim), lambda c: c.already_applied(checks))
    ok = DeviceChangeStatus.PROCESSED
    assert [a.status if a else None for a in answers] == [ok, None, ok]
    assert answers[0].detail == (
        f"already in effect at Telegence: contactName=Dock 7, costCenter=CC-42; and at Rev.io service {finished}"
    )
    assert tg.stats()["applied_total"] == 0 and "PATCH /Services/{id}" not in rev.stats()["calls_by_route"]


def test_registry_gives_telegence_the_tenants_rev_client(telegence_sim, revio_sim) -> None:
    plain = build_adapter(telegence_account(telegence_sim))
    with_billing = build_adapter(telegence_account(telegence_sim, billing=revio_account(revio_sim)))
    assert isinstance(plain, TelegenceClient) and plain.billing is None
    assert isinstance(with_billing, TelegenceClient) and isinstance(with_billing.billing, RevioClient)
    assert with_billing.billing.account.username == REVIO_USER


# -- activations ----------------------------------------------------------------------------------


def test_activation_of_1000_lines_batches_polls_and_settles(telegence_sim) -> None:
    sim = telegence_sim.simulator
    changes = activation_changes(1000)
    rejected = {changes[10].iccid, changes[450].iccid}
    sim.configure(
        reject_iccids=sorted(rejected), pending_iccids=[changes[999].iccid], rejection_reason="IMEI is blacklisted"
    )
    client = TelegenceClient(telegence_account(telegence_sim))
    assert isinstance(client, CarrierAdapter) and client.parse_callback({"x": 1}) == []
    assert (client.max_polls, client.poll_interval_seconds) == (6, 300)

    async def scenario() -> tuple[list[DeviceResult], list[list[DeviceResult | None]]]:
        try:
            sent = await client.apply(changes)
            waiting = [
                DeviceChange(
                    c.device_change_id,
                    c.device_id,
                    c.change_type,
                    c.iccid,
                    c.imei,
                    None,
                    None,
                    c.target,
                    r.carrier_request_id,
                )
                for c, r in zip(changes, sent)
            ]
            rounds = [await client.poll(waiting) for _ in range(3)]
            return sent, rounds
        finally:
            await client.aclose()

    sent, rounds = asyncio.run(scenario())
    assert [r.status for r in sent] == [DeviceChangeStatus.PROCESSING] * 1000
    assert len({r.carrier_request_id for r in sent}) == 1000
    assert sim.activation_requests == 1000 // ACTIVATION_BATCH_SIZE == 5
    posted = [e for e in all_logs(sent) if e.request_text.startswith("POST")]
    assert len(posted) == 5 and all(len(json.loads(e.request_text.split("\n\n", 1)[1])) == 200 for e in posted)
    assert rounds[0] == [None] * 1000 and rounds[1] == [None] * 1000  # pending for 2 polls
    final = rounds[2]
    by_iccid = {c.iccid: r for c, r in zip(changes, final)}
    assert by_iccid[changes[999].iccid] is None  # stays pending: the engine gives up at max_polls
    for iccid in rejected:
        assert by_iccid[iccid].status == DeviceChangeStatus.API_FAILED
        assert "IMEI is blacklisted" in by_iccid[iccid].detail
    done = [(c, r) for c, r in zip(changes, final) if r and r.status == DeviceChangeStatus.PROCESSED]
    assert len(done) == 997
    numbers = {r.new_values["msisdn"] for _, r in done}
    assert len(numbers) == 997
    for c, r in done[:50]:
        assert r.new_values == {"msisdn": r.new_values["msisdn"], "status": "A", "carrier_rate_plan": "IOTSOC5GB"}
        assert sim.device(r.new_values["msisdn"])["sim"] == c.iccid
    assert sim.stats()["applied_more_than_once"] == 0
    assert_no_secret(sent + final)


def test_activation_needs_ban_and_fields_and_survives_faults(telegence_sim) -> None:
    sim = telegence_sim.simulator
    changes = activation_changes(3, start=5000)
    no_ban = TelegenceClient(telegence_account(telegence_sim, extra={"ban": ""}))
    results = apply(no_ban, changes[:1])
    assert results[0].status == DeviceChangeStatus.API_FAILED and "ban" in results[0].detail
    bare = DeviceChange(
        9, 9, changes[0].change_type, changes[0].iccid, None, None, None, {"carrier_rate_plan": "IOTSOC1GB"}
    )
    assert "IMEI" in apply(TelegenceClient(telegence_account(telegence_sim)), [bare])[0].detail
    assert sim.total_calls == 0
    sim.configure(timeout_rate=1.0, timeout_hold_seconds=0.5, activation_polls=0)
    flaky = TelegenceClient(telegence_account(telegence_sim, timeout_seconds=0.2, max_attempts=2))
    lost = apply(flaky, changes[1:])
    assert [r.status for r in lost] == [DeviceChangeStatus.API_FAILED] * 2 and "retries exhausted" in lost[0].detail
    sim.configure(timeout_rate=0.0)
    again = apply(TelegenceClient(telegence_account(telegence_sim)), changes[1:])
    assert [r.status for r in again] == [DeviceChangeStatus.PROCESSING] * 2
    assert all(sim.applied_counts[c.iccid] == 1 for c in changes[1:])  # the re-send was replayed
    waiting = [
        DeviceChange(
            c.device_change_id, None, c.change_type, c.iccid, c.imei, None, None, c.target, r.carrier_request_id
        )
        for c, r in zip(changes[1:], again)
    ]
    done = run(TelegenceClient(telegence_account(telegence_sim)), lambda c: c.already_applied(waiting))
    assert [d.status for d in done] == [DeviceChangeStatus.PROCESSED] * 2 and done[0].new_values["msisdn"]


def test_activation_under_transient_faults_settles_exactly_once(telegence_sim) -> None:
    sim = telegence_sim.simulator
    sim.configure(
        error_rate=0.05, timeout_rate=0.03, malformed_rate=0.02, timeout_hold_seconds=0.6, activation_polls=0, seed=7
    )
    changes = activation_changes(400, start=20_000)
    client = TelegenceClient(
        telegence_account(telegence_sim, timeout_seconds=0.3, max_attempts=6), batch_size=10
    )  # 40 POSTs, so some of them meet a fault

    async def scenario() -> tuple[list[DeviceResult], list[DeviceResult | None]]:
        try:
            sent = await client.apply(changes)
            waiting = [
                DeviceChange(
                    c.device_change_id, None, c.change_type, c.iccid, c.imei, None, None, c.target, r.carrier_request_id
                )
                for c, r in zip(changes, sent)
            ]
            final: list[DeviceResult | None] = [None] * len(waiting)
            for _ in range(4):  # a poll whose retries all fail answers None: ask again
                todo = [i for i, r in enumerate(final) if r is None]
                for i, answer in zip(todo, await client.poll([waiting[i] for i in todo])):
                    final[i] = answer
            return sent, final
        finally:
            await client.aclose()

    sent, final = asyncio.run(scenario())
    assert [r.status for r in sent] == [DeviceChangeStatus.PROCESSING] * 400, {r.detail for r in sent}
    assert [r.status if r else None for r in final] == [DeviceChangeStatus.PROCESSED] * 400
    assert sim.stats()["activation_replays"] > 0  # a POST applied but unanswered was re-sent
    assert all(sim.applied_counts[c.iccid] == 1 for c in changes)
    assert len({r.new_values["msisdn"] for r in final if r}) == 400


def test_registry_builds_the_telegence_client(telegence_sim) -> None:
    adapter = build_adapter(telegence_account(telegence_sim))
    assert isinstance(adapter, TelegenceClient) and adapter.supports(2) and not adapter.supports(3)
