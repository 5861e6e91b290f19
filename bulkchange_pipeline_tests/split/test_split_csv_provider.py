"""A CSV's serviceProviderId column decides between one bulk change and a split: set on every row
(one provider), blank on every row or absent (split). Blank on some rows and set on others is
neither, so it is refused with that reason and nothing is stored, never taken as a single-provider
request that refuses the blank rows' devices as "not in inventory"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.intake.csv_file import parse_csv
from bulkchange_pipeline.intake.parsing import IntakeError

from ..intake.test_api import Api, make_api
from .conftest import stored_counts


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=5)


def _upload(api: Api, text: str, dry: bool = False):
    return api.client.post(
        "/bulk-changes/csv" + ("?dryRun=true" if dry else ""),
        files={"file": ("a.csv", text)},
        data={"changeType": "10"},
        headers=api.demo,
    )


def test_a_provider_column_blank_on_some_rows_is_refused_with_the_reason(api: Api) -> None:
    j, p = api.seed.sample_iccids["jasper"][0], api.seed.sample_iccids["pond"][0]
    pond = api.seed.service_providers["pond"]
    before = stored_counts(api.engine)
    for dry in (True, False):
        r = _upload(api, f"iccid,costCenter,serviceProviderId\n{j},A,\n{p},B,{pond}\n", dry)
        assert r.status_code == 422, r.text
        assert "blank on some rows" in r.json()["detail"] and str(pond) in r.json()["detail"]
    assert stored_counts(api.engine) == before

    split = _upload(api, f"iccid,costCenter,serviceProviderId\n{j},A,\n{p},B,\n")  # blank on every row: split
    assert split.status_code == 202 and len(split.json()["children"]) == 2
    one = _upload(
        api, f"iccid,costCenter,serviceProviderId\n{p},A,{pond}\n{api.seed.sample_iccids['pond'][1]},B,{pond}\n"
    )
    assert one.status_code == 201, one.text


def test_a_provider_given_apart_fills_the_blank_cells() -> None:
    text = b"iccid,costCenter,serviceProviderId\n89011,A,\n89012,B,5\n"
    parsed = parse_csv(text, change_type=10, service_provider_id=5)
    assert parsed.request.service_provider_id == 5
    with pytest.raises(IntakeError, match="blank on some rows and 5 on others"):
        parse_csv(text, change_type=10)
