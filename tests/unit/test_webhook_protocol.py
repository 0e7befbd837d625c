"""Pure logic of the webhook receiver: signatures, payload reading, the flag decision,
the sender address behind proxies, and the settings that configure them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from tokendist.core.errors import MalformedPayload
from tokendist.core.settings import SettingsError, ip_networks, load_settings
from tokendist.sim import provider
from tokendist.webhook import jsonbody, paystack, senders
from tokendist.webhook.providers import registry
from tokendist.webhook.providers.base import (
    Adjustment,
    AdjustmentKind,
    Charge,
    Ignored,
    PaymentProvider,
    Verification,
)
from tokendist.webhook.providers.paystack import Paystack
from tokendist.webhook.receiver import Expected, FlagReason, assess

KEY = b"sk_test_abc"


def test_the_signature_is_hex_hmac_sha512_of_the_raw_bytes() -> None:
    body = b'{"event":"charge.success"}'
    expected = hmac.new(KEY, body, hashlib.sha512).hexdigest()
    assert paystack.signature(KEY, body) == expected
    assert paystack.signature_ok(KEY, body, expected)
    for wrong in (None, "", expected[:-1], expected.upper(), "é" * 128, expected + " "):
        assert not paystack.signature_ok(KEY, body, wrong)
    assert not paystack.signature_ok(KEY, body + b" ", expected)


@pytest.mark.parametrize("metadata", [0, "", None, {"a": 1}, [1]])
def test_charge_success_is_read_whatever_metadata_is(metadata: object) -> None:
    paid = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    note = paystack.parse(
        provider.charge_success("R-1", 12_345, metadata=metadata, domain="test", paid_at=paid)
    )
    assert isinstance(note, Charge)
    assert dataclasses.replace(note, kept="") == Charge(
        event="charge.success",
        reference="R-1",
        domain="test",
        amount_minor=12_345,
        currency="NGN",
        paid_at=paid,
        kept="",
    )


@pytest.mark.parametrize(
    "data",
    [
        {"reference": "R", "amount": "100", "currency": "NGN", "domain": "live"},
        {"reference": "R", "amount": True, "currency": "NGN", "domain": "live"},
        {"reference": "R", "amount": -1, "currency": "NGN", "domain": "live"},
        {"reference": "R", "amount": 1.5, "currency": "NGN", "domain": "live"},
        {"reference": "", "amount": 100, "currency": "NGN", "domain": "live"},
        {"reference": "R", "amount": 100, "currency": "NGN", "domain": "staging"},
        {"reference": "R", "amount": 100, "domain": "live"},
    ],
)
def test_a_charge_with_unusable_money_fields_is_malformed(data: dict[str, object]) -> None:
    with pytest.raises(MalformedPayload):
        paystack.parse(json.dumps({"event": "charge.success", "data": data}).encode())


def test_refund_amounts_arrive_as_strings_and_disputes_nest_the_reference() -> None:
    refund = paystack.parse(provider.refund_processed("R-1", 2_500))
    assert isinstance(refund, Adjustment)
    assert (refund.event, refund.kind, refund.reference, refund.amount_minor) == (
        "refund.processed",
        AdjustmentKind.REFUND,
        "R-1",
        2_500,
    )
    dispute = paystack.parse(provider.dispute("R-2", "charge.dispute.resolve"))
    assert isinstance(dispute, Adjustment)
    assert (dispute.event, dispute.kind, dispute.reference, dispute.amount_minor) == (
        "charge.dispute.resolve",
        AdjustmentKind.DISPUTE,
        "R-2",
        None,
    )
    assert paystack.minor_units("12x") is None
    assert paystack.minor_units(False) is None


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"event": 1}', b"\xff", b'"x"'])
def test_unreadable_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        paystack.parse(body)


def test_other_events_are_read_without_their_data() -> None:
    assert paystack.parse(b'{"event": "transfer.success", "data": 7}') == Ignored(
        event="transfer.success"
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate_key"),
        (b"[" + b"9" * 33 + b"]", "number_too_long"),
        (b"[NaN]", "invalid_json"),
        (b"[" * 33 + b"]" * 33, "too_deep"),
        (b"\xed\xa0\x80", "not_utf8"),  # a lone surrogate encoded as UTF-8
    ],
)
def test_the_strict_reader_refuses_what_json_would_take_leniently(body: bytes, reason: str) -> None:
    with pytest.raises(jsonbody.Unreadable) as refused:
        jsonbody.loads(body)
    assert refused.value.reason == reason


def test_nesting_is_measured_outside_strings() -> None:
    assert jsonbody.depth(b'{"a": "[[[{{{\\"]]]", "b": [[1]]}') == 3
    assert jsonbody.loads(b"[" * 32 + b"-" + b"9" * 32 + b"]" * 32)


def test_only_the_reconciliation_fields_of_a_charge_are_kept() -> None:
    body = provider.charge_success("R-1", 100, metadata={"phone": "+234"})
    note = paystack.parse(body)
    assert isinstance(note, Charge)
    kept = json.loads(note.kept)
    assert "email" not in str(kept)
    assert "metadata" not in kept["data"]
    assert kept["data"]["customer"] == {"id": 84312}
    assert (kept["event"], kept["data"]["reference"], kept["data"]["amount"]) == (
        "charge.success",
        "R-1",
        100,
    )


PENDING = Expected(status="pending", amount_minor=100, currency="NGN")
CHARGE = Charge(
    event="charge.success",
    reference="R",
    domain="live",
    amount_minor=100,
    currency="NGN",
    paid_at=None,
    kept="{}",
)
OK = Verification("success", 100, "NGN")


@pytest.mark.parametrize(
    ("charge", "expected", "verification", "flag"),
    [
        (CHARGE, PENDING, None, None),
        (CHARGE, PENDING, OK, None),
        (CHARGE, None, OK, FlagReason.UNKNOWN_REFERENCE),
        (dataclasses.replace(CHARGE, domain="test"), PENDING, None, FlagReason.DOMAIN_MISMATCH),
        (CHARGE, Expected("confirmed", 100, "NGN"), None, FlagReason.INVESTMENT_NOT_PENDING),
        (dataclasses.replace(CHARGE, currency="USD"), PENDING, None, FlagReason.CURRENCY_MISMATCH),
        (dataclasses.replace(CHARGE, amount_minor=99), PENDING, None, FlagReason.AMOUNT_MISMATCH),
        (CHARGE, PENDING, Verification("reversed", 100, "NGN"), FlagReason.NOT_VERIFIED),
        (CHARGE, PENDING, Verification("success", 101, "NGN"), FlagReason.NOT_VERIFIED),
    ],
)
def test_assess_flags_every_mismatch(
    charge: Charge,
    expected: Expected | None,
    verification: Verification | None,
    flag: FlagReason | None,
) -> None:
    assert assess(charge, expected, "live", verification) is flag


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "sender"),
    [
        ("52.31.139.75", None, "", "52.31.139.75"),
        ("10.0.0.5", "52.31.139.75", "", "10.0.0.5"),
        ("10.0.0.5", "52.31.139.75", "10.0.0.0/8", "52.31.139.75"),
        ("10.0.0.5", "1.1.1.1, 52.31.139.75, 10.0.0.9", "10.0.0.0/8", "52.31.139.75"),
        ("10.0.0.5", "garbage", "10.0.0.0/8", None),
        ("10.0.0.5", "10.0.0.7", "10.0.0.0/8", "10.0.0.7"),
        (None, None, "", None),
    ],
)
def test_the_sender_is_read_from_the_right_through_trusted_proxies_only(
    peer: str | None, forwarded: str | None, trusted: str, sender: str | None
) -> None:
    found = senders.sender(peer, forwarded, ip_networks(trusted))
    assert (None if found is None else str(found)) == sender


def test_an_empty_allowlist_allows_everyone() -> None:
    assert senders.allowed(None, None, (), ())
    assert not senders.allowed("1.2.3.4", None, ip_networks("52.31.139.75"), ())


def test_settings_refuse_a_key_of_the_other_mode_and_bad_networks() -> None:
    base = {"database_url": "postgresql://x", "kafka_bootstrap": "k:1"}
    test_key = {"paystack_secret_key": "sk_test_x"}
    with pytest.raises(SettingsError, match="not a live key"):
        load_settings(**base, **test_key)
    assert load_settings(**base, **test_key, paystack_mode="test")
    with pytest.raises(SettingsError, match="TOKENDIST_WEBHOOK_ALLOWED_IPS"):
        load_settings(**base, webhook_allowed_ips="52.31.139.75,nope")
    with pytest.raises(SettingsError, match="set TOKENDIST_PAYSTACK_SECRET_KEY"):
        load_settings(**base).require_webhook()


SETTINGS = {"database_url": "postgresql://x", "kafka_bootstrap": "k:1"}
LIVE = {"paystack_secret_key": "sk_live_x"}
TEST = {"paystack_secret_key": KEY.decode(), "paystack_mode": "test"}


def test_paystack_is_enabled_by_its_secret_and_nothing_else_is() -> None:
    enabled = registry.enabled(load_settings(**SETTINGS, **LIVE))
    assert [(p.name, p.mode) for p in enabled] == [("paystack", "live")]
    with pytest.raises(SettingsError, match="set TOKENDIST_PAYSTACK_SECRET_KEY"):
        registry.enabled(load_settings(**SETTINGS))


def test_the_paystack_plug_in_checks_its_header_over_the_raw_bytes() -> None:
    plug_in: PaymentProvider = Paystack.from_settings(load_settings(**SETTINGS, **TEST))
    body = provider.charge_success("R-1", 100, domain="test")
    good = paystack.signature(KEY, body)
    assert plug_in.verify_signature(body, {paystack.SIGNATURE_HEADER: good})
    assert not plug_in.verify_signature(body + b" ", {paystack.SIGNATURE_HEADER: good})
    assert not plug_in.verify_signature(body, {"x-other-signature": good})
    assert not plug_in.verify_signature(body, {})
    assert plug_in.parse(body) == paystack.parse(body)
    # Without TOKENDIST_PAYSTACK_VERIFY nothing is asked: the API is never called.
    assert asyncio.run(plug_in.confirm("R-1")) is None
