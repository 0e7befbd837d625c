"""Schema rejection cases, each with its reason."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokendist.core.errors import InvalidEvent
from tokendist.schemas import (
    MAX_AMOUNT_MINOR,
    MAX_EVENT_BYTES,
    MAX_TOKEN_UNITS,
    PaymentConfirmedV1,
    parse_event,
)
from tokendist.schemas.export import export

WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def valid() -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "PaymentConfirmed",
        "schema_version": 1,
        "occurred_at": "2026-11-25T10:00:00Z",
        "data": {
            "user_id": "user-1",
            "investment_id": "inv-1",
            "tokenization_id": "tok-1",
            "property_id": "prop-1",
            "tokens": "1000000000000000000",
            "amount_minor": 500_000,
            "currency": "NGN",
            "wallet_address": WALLET,
            "provider": "paystack",
            "provider_reference": "T123456789",
        },
    }


def with_data(**changes: Any) -> bytes:
    doc = valid()
    doc["data"].update(changes)
    return json.dumps(doc).encode()


def test_a_valid_event_parses_with_integer_amounts() -> None:
    event = parse_event(json.dumps(valid()).encode())
    assert event.data.tokens == 10**18
    assert event.data.amount_minor == 500_000
    assert parse_event(event.to_json()) == event


CASES = [
    ("not json", b"{", "malformed_json", "Expecting property name"),
    ("not an object", b"[1,2]", "malformed_json", "top level must be an object"),
    ("non-UTF-8", b"\xff\xfe{}", "not_utf8", "can't decode"),
    ("empty", None, "empty_message", "no value"),
    ("huge", b" " * (MAX_EVENT_BYTES + 1), "too_large", "exceeds"),
    (
        "unknown type",
        json.dumps({**valid(), "event_type": "Refund"}).encode(),
        "unknown_event_type",
        "'Refund'",
    ),
    (
        "wrong version",
        json.dumps({**valid(), "schema_version": 2}).encode(),
        "unsupported_schema_version",
        "schema_version 2 (supported: 1)",
    ),
    (
        "version as string",
        json.dumps({**valid(), "schema_version": "1"}).encode(),
        "unsupported_schema_version",
        "'1'",
    ),
    (
        "unknown field",
        json.dumps({**valid(), "extra": 1}).encode(),
        "invalid_schema",
        "extra: Extra inputs are not permitted",
    ),
    ("unknown data field", with_data(discount=5), "invalid_schema", "data.discount"),
    (
        "missing field",
        json.dumps({**valid(), "data": {"user_id": "u"}}).encode(),
        "invalid_schema",
        "data.investment_id: Field required",
    ),
    (
        "tokens as number",
        with_data(tokens=10**18),
        "invalid_schema",
        "data.tokens: must be a string of decimal digits",
    ),
    ("zero tokens", with_data(tokens="0"), "invalid_schema", "data.tokens: must be positive"),
    ("negative tokens", with_data(tokens="-5"), "invalid_schema", "without sign"),
    ("tokens with leading zero", with_data(tokens="01"), "invalid_schema", "leading zeros"),
    (
        "tokens beyond uint256",
        with_data(tokens=str(MAX_TOKEN_UNITS + 1)),
        "invalid_schema",
        "exceeds uint256",
    ),
    ("fractional tokens", with_data(tokens="1.5"), "invalid_schema", "decimal digits"),
    ("zero amount", with_data(amount_minor=0), "invalid_schema", "data.amount_minor"),
    ("negative amount", with_data(amount_minor=-1), "invalid_schema", "data.amount_minor"),
    (
        "amount beyond 2^53",
        with_data(amount_minor=MAX_AMOUNT_MINOR + 1),
        "invalid_schema",
        "data.amount_minor: Input should be less than or equal to",
    ),
    ("float amount", with_data(amount_minor=5.5), "invalid_schema", "data.amount_minor"),
    ("amount as string", with_data(amount_minor="500"), "invalid_schema", "data.amount_minor"),
    (
        "lowercase address",
        with_data(wallet_address=WALLET.lower()),
        "invalid_schema",
        "EIP-55 checksummed",
    ),
    (
        "bad checksum",
        with_data(wallet_address=WALLET.replace("aA", "Aa")),
        "invalid_schema",
        "EIP-55 checksummed",
    ),
    ("short address", with_data(wallet_address="0x1234"), "invalid_schema", "data.wallet_address"),
    ("bad currency", with_data(currency="naira"), "invalid_schema", "data.currency"),
    (
        "naive timestamp",
        json.dumps({**valid(), "occurred_at": "2026-11-25T10:00:00"}).encode(),
        "invalid_schema",
        "occurred_at",
    ),
    (
        "bad event id",
        json.dumps({**valid(), "event_id": "nope"}).encode(),
        "invalid_schema",
        "event_id",
    ),
    ("empty user", with_data(user_id=""), "invalid_schema", "data.user_id"),
]


@pytest.mark.parametrize(
    ("raw", "reason", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_events_are_rejected_with_a_reason(
    raw: bytes | None, reason: str, detail: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert caught.value.reason == reason
    assert detail in caught.value.detail


def test_wallet_may_be_null_until_the_user_has_one() -> None:
    assert parse_event(with_data(wallet_address=None)).data.wallet_address is None


def test_json_schema_export_describes_tokens_as_strings(tmp_path: Any) -> None:
    (path,) = export(tmp_path)
    schema = json.loads(path.read_text())
    data = schema["$defs"]["PaymentConfirmedData"]
    tokens = data["properties"]["tokens"]
    assert (tokens["type"], tokens["pattern"]) == ("string", "^[1-9][0-9]{0,77}$")
    assert data["additionalProperties"] is False
    assert set(data["required"]) >= {"user_id", "tokens", "amount_minor", "wallet_address"}


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_any_bytes_either_parse_or_are_rejected_with_a_reason(raw: bytes) -> None:
    result = outcome(raw)
    if isinstance(result, InvalidEvent):
        assert result.reason in REASONS
        assert result.detail


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.sampled_from(list(valid()["data"])), JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_mutating_any_field_never_crashes_the_parser(field: str, value: Any) -> None:
    result = outcome(with_data(**{field: value}))
    if isinstance(result, InvalidEvent):
        assert result.reason == "invalid_schema"
        assert f"data.{field}" in result.detail
    else:  # only a value the schema allows survives, and it round-trips
        assert parse_event(result.to_json()) == result


def outcome(raw: bytes) -> PaymentConfirmedV1 | InvalidEvent:
    try:
        return parse_event(raw)
    except InvalidEvent as exc:
        return exc


REASONS = {
    "empty_message",
    "too_large",
    "not_utf8",
    "malformed_json",
    "unknown_event_type",
    "unsupported_schema_version",
    "invalid_schema",
}
