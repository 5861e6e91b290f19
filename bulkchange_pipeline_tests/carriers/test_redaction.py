"""Redaction: no credential survives into stored request/response text."""

from __future__ import annotations

from bulkchange_pipeline.carriers.redaction import (
    MASK,
    basic_token,
    redact_headers,
    redact_json,
    redact_text,
)


def test_redact_headers_masks_credential_headers_case_insensitively() -> None:
    headers = {
        "Authorization": "Basic abc",
        "app-secret": "s1",
        "ApiSecret": "s2",
        "Ocp-Apim-Subscription-Key": "s3",
        "VZ-M2M-Token": "s4",
        "Accept": "application/json",
        "app-id": "public-id",
    }
    out = redact_headers(headers)
    assert out["Accept"] == "application/json" and out["app-id"] == "public-id"
    for name in ("Authorization", "app-secret", "ApiSecret", "Ocp-Apim-Subscription-Key", "VZ-M2M-Token"):
        assert out[name] == MASK
    assert redact_headers([("authorization", "x")]) == {"authorization": MASK}


def test_redact_json_is_deep_and_leaves_other_values() -> None:
    payload = {
        "username": "cb-user",
        "password": "p@ss",
        "nested": [{"secret": "x", "ApiSecret": "y", "iccid": "8901"}],
        "client_secret": "z",
    }
    out = redact_json(payload)
    assert out == {
        "username": "cb-user",
        "password": MASK,
        "nested": [{"secret": MASK, "ApiSecret": MASK, "iccid": "8901"}],
        "client_secret": MASK,
    }
    assert payload["password"] == "p@ss"  # input untouched


def test_redact_text_masks_secret_values_pairs_and_tokens() -> None:
    secret = "k3y-Value-123"
    token = basic_token("user", secret)
    text = (
        f"PUT /x?apiKey={secret}&page=2\n"
        f"Authorization: Basic {token}\n"
        "app-secret: hunter2hunter2\n\n"
        '{"password": "pa\\"ss", "note": "key is k3y-Value-123", "token":"t0k3n"}\n'
        "Bearer eyJhbGciOiJIUzI1NiJ9.abc.def"
    )
    out = redact_text(text, [secret, token])
    for leaked in (secret, token, "hunter2hunter2", 'pa\\"ss', "t0k3n", "eyJhbGciOiJIUzI1NiJ9"):
        assert leaked not in out, leaked
    assert "page=2" in out and '"note": "key is ***"' in out
    assert '"password": "***"' in out and "Authorization: ***" in out


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = '{"iccid":"89012608000000000005","status":"ACTIVATED","monkey=1":2}'
    assert redact_text(text, ["", None, "zz"]) == text
