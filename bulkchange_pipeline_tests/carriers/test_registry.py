"""The carrier port's one registry (`carriers.build_adapter`, `parse_callback`, `updates_billing`)
and the bounded worker pool every client runs its per-device calls through
(`CarrierHttp.map_bounded`). Pure: no simulator, no socket."""

from __future__ import annotations

import asyncio

import pytest

from bulkchange_pipeline.carriers import (
    CarrierAccount,
    CarrierAdapter,
    UnknownIntegrationError,
    build_adapter,
    parse_callback,
    sends_callbacks,
    updates_billing,
)
from bulkchange_pipeline.carriers.http import CarrierHttp
from bulkchange_pipeline.carriers.jasper import JasperClient
from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus, Integration


def account(integration: str, **overrides: object) -> CarrierAccount:
    values: dict[str, object] = {
        "service_provider_id": 1,
        "integration": integration,
        "base_url": "http://127.0.0.1:9",
        "username": "u",
        "secret": "s",
    }
    values.update(overrides)
    return CarrierAccount(**values)  # type: ignore[arg-type]


def test_the_jasper_family_builds_one_client_and_unknown_names_are_refused() -> None:
    for name in ("jasper", "ROGERS", " att_pod19 ", "t_mobile_jasper"):
        adapter = build_adapter(account(name))
        assert isinstance(adapter, JasperClient) and isinstance(adapter, CarrierAdapter)
        assert adapter.integration is Integration.JASPER
    with pytest.raises(UnknownIntegrationError, match="no carrier client for integration 'bandwidth'"):
        build_adapter(account("bandwidth"))


def test_every_adapter_has_every_member_the_engine_uses() -> None:
    adapter = build_adapter(account("jasper"))
    assert adapter.max_polls is None and adapter.callback_name is None
    assert asyncio.run(adapter.register_callback()) is None  # nothing to register: a no-op
    assert asyncio.run(adapter.poll([])) == []
    assert adapter.parse_callback({"requestId": "r"}) == []


def test_callbacks_are_read_through_the_registered_class() -> None:
    (outcome,) = parse_callback("teal", {"query": {"requestId": "abc"}})
    assert (outcome.request_id, outcome.status) == ("abc", DeviceChangeStatus.PROCESSING)
    assert parse_callback("thingspace", {"noise": 1}) == []
    for name in ("jasper", "telegence", "bandwidth"):
        with pytest.raises(UnknownIntegrationError, match=r"sends no callbacks \(known: thingspace, teal\)"):
            parse_callback(name, {"requestId": "r"})


def test_only_telegence_username_edits_reach_billing() -> None:
    assert updates_billing("telegence", ChangeType.EDIT_USERNAME_COST_CENTER)
    assert updates_billing(" Telegence ", 10)
    assert not updates_billing("telegence", ChangeType.STATUS_UPDATE)
    assert not updates_billing("jasper", ChangeType.EDIT_USERNAME_COST_CENTER)
    assert not updates_billing("bandwidth", ChangeType.EDIT_USERNAME_COST_CENTER)


def test_the_registry_says_which_carriers_answer_through_the_callback_receiver() -> None:
    """Reconcile re-polls these carriers' rows sent while the receiver was down (and no others)."""
    assert {
        name
        for name in ("jasper", "rogers", "thingspace", "teal", "telegence", "pond", "revio")
        if sends_callbacks(name)
    } == {"thingspace", "teal"}
    assert sends_callbacks(" ThingSpace ")
    assert not sends_callbacks("bandwidth")


@pytest.mark.parametrize(("max_concurrency", "unlimited_workers", "most"), [(3, 64, 3), (0, 5, 5), (50, 64, 20)])
def test_map_bounded_keeps_order_and_the_account_limit(max_concurrency: int, unlimited_workers: int, most: int) -> None:
    http = CarrierHttp(account("jasper", max_concurrency=max_concurrency), unlimited_workers=unlimited_workers)
    running, peak = 0, 0

    async def one(item: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (item % 3))
        running -= 1
        return item * 2

    assert asyncio.run(http.map_bounded(list(range(20)), one)) == [i * 2 for i in range(20)]
    assert peak == most
    assert asyncio.run(http.map_bounded([], one)) == []
