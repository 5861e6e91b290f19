"""``bulkchange drops set --x12-partners FILE.json`` on both backends: valid trading-partner settings
are stored exactly as given and shown; anything else is refused with a reason and nothing stored
(a Hypothesis property over arbitrary JSON, and the cases people get wrong)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.store.file_drops import drop_settings

from ..factories import make_account

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _set(db_url: str, path: Path) -> Any:
    args = ["drops", "set", "--tenant", "acme", "--x12-partners", str(path), "--database-url", db_url]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _valid(sp: int, customer: int) -> dict[str, Any]:
    return {
        "ZZ:DISTRIB01": {
            "serviceProviderId": sp,
            "changes": [
                {"changeType": 5, "customerAssignment": {"customerId": customer}},
                {"changeType": 1, "statusUpdate": {"targetStatus": "ACTIVATED"}},
            ],
            "serialQualifiers": ["SN", "ZZ"],
        },
        "*": {"serviceProviderId": sp, "changes": [{"changeType": 5, "customerAssignment": {"customerId": customer}}]},
    }


def test_partner_settings_are_stored_as_given_and_shown(engine, db_url, tmp_path):
    ids = make_account(engine, "http://127.0.0.1:9")
    path = tmp_path / "partners.json"
    partners = _valid(ids["service_provider_id"], ids["customer_id"])
    path.write_text(json.dumps(partners))
    result = _set(db_url, path)
    assert result.exit_code == 0, result.output
    assert "X12 partners: *, ZZ:DISTRIB01" in result.output
    assert drop_settings(engine, ids["tenant_id"]).partner_settings == partners


def test_wrong_partner_settings_are_refused_with_a_reason(engine, db_url, tmp_path):
    ids = make_account(engine, "http://127.0.0.1:9")
    good = _valid(ids["service_provider_id"], ids["customer_id"])["*"]
    cases = [
        ("not json", "cannot read"),
        ("[]", "must be a JSON object"),
        (json.dumps({"*": {**good, "changes": []}}), "changes"),
        (json.dumps({"*": {**good, "colour": "red"}}), "colour"),
        (json.dumps({"*": {**good, "serviceProviderId": 999}}), "no such service provider"),
        (json.dumps({"x" * 41: good}), "is not a sender"),
    ]
    for n, (text, reason) in enumerate(cases):
        path = tmp_path / f"case{n}.json"
        path.write_text(text)
        result = _set(db_url, path)
        assert result.exit_code != 0 and reason in result.output, (text, result.output)
        assert "Traceback" not in result.output
    assert drop_settings(engine, ids["tenant_id"]) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)


def test_any_json_file_is_stored_exactly_or_refused_with_a_reason(engine, db_url, tmp_path):
    ids = make_account(engine, "http://127.0.0.1:9")
    good = _valid(ids["service_provider_id"], ids["customer_id"])
    keys = st.sampled_from(["serviceProviderId", "changes", "serialQualifiers", "processChanges", "other"])
    mutated = st.builds(
        lambda sender, key, value: {sender: {**good["*"], key: value}},
        st.sampled_from(["*", "ZZ:DISTRIB01", ""]),
        keys,
        st.sampled_from([ids["service_provider_id"], good["ZZ:DISTRIB01"]["changes"], ["SN", "ZZ"], True]) | JSON,
    )
    path = tmp_path / "partners.json"

    @PROPERTY
    @given(partners=st.one_of(mutated, st.just(good), JSON))
    def prop(partners: Any) -> None:
        before = drop_settings(engine, ids["tenant_id"])
        path.write_text(json.dumps(partners))
        result = _set(db_url, path)
        after = drop_settings(engine, ids["tenant_id"])
        if result.exit_code == 0:
            assert after is not None and after.partner_settings == partners
        else:
            assert result.exit_code in (1, 2) and result.output.strip() and "Traceback" not in result.output
            assert after == before

    prop()
