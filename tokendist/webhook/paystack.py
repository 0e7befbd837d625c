"""Paystack's webhook protocol, as pure functions: the signature and the payloads,
read into the provider-neutral notices of ``webhook/providers/base.py`` (the plug-in
the receiver talks to is ``webhook/providers/paystack.py``).

The signature is checked over the raw body bytes before anything parses them; hashing a
re-serialised document instead is the classic bug (whitespace, key order and escapes all
change the bytes). Payloads are read leniently where Paystack is loose (``metadata`` is
seen as 0, "", null or an object; a refund's amount is a string) and strictly where money
is concerned. Every signed body that cannot be used is a ``MalformedPayload`` with a
machine-readable reason (answered 400): an amount that is not an integer, or one no
BIGINT holds (Paystack's amounts are kobo, far below 2^63); a reference, currency or
event name outside printable ASCII (PostgreSQL text refuses NUL; a lone surrogate is no
UTF-8 at all) and therefore never one the platform issued.

What is kept of a body (a notice's ``kept``) is what reconciliation with Paystack needs
and no personal data: the customer's e-mail, names and phone, card details, ``metadata``
(the platform may put anything there) and dispute messages are dropped; the customer's
id and code let an operator find them in Paystack's dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from tokendist.core.errors import MalformedPayload
from tokendist.webhook import jsonbody
from tokendist.webhook.providers.base import (
    CURRENCY,
    EVENT,
    MAX_AMOUNT_MINOR,
    REFERENCE,
    Adjustment,
    AdjustmentKind,
    Charge,
    Ignored,
    Notice,
)

PROVIDER = "paystack"
SIGNATURE_HEADER = "x-paystack-signature"
CHARGE_EVENT = "charge.success"


def signature(secret: bytes, body: bytes) -> str:
    """What Paystack sends in ``x-paystack-signature``: hex HMAC-SHA512 of the raw body."""
    return hmac.new(secret, body, hashlib.sha512).hexdigest()


def signature_ok(secret: bytes, body: bytes, provided: str | None) -> bool:
    """Constant-time comparison; a missing, empty or odd-looking header is simply wrong."""
    if not provided:
        return False
    # Header values arrive decoded as latin-1; comparing bytes keeps compare_digest total
    # (it refuses non-ASCII str) and constant-time.
    return hmac.compare_digest(signature(secret, body).encode(), provided.encode("latin-1"))


# The fields of ``data`` kept per event ("a.b": field b of the object a); scalars only.
CHARGE_KEPT = (
    "id", "domain", "status", "reference", "amount", "currency", "paid_at", "paidAt",
    "channel", "fees", "customer.id", "customer.customer_code",
)  # fmt: skip
ADJUSTMENT_KEPT = {
    AdjustmentKind.REFUND: (
        "id", "domain", "status", "transaction_reference", "refund_reference", "amount",
        "currency",
    ),
    AdjustmentKind.DISPUTE: (
        "id", "domain", "status", "resolution", "category", "refund_amount", "currency",
        "due_at", "resolved_at", "created_at", "transaction.id", "transaction.reference",
        "transaction.amount", "transaction.currency",
    ),
}  # fmt: skip


def minor_units(value: object) -> int | None:
    """An amount in currency subunits: an integer, or a string of digits (refunds)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_AMOUNT_MINOR:
        return value
    return None


def parse(body: bytes) -> Notice:
    """Read a verified body; raises ``MalformedPayload`` when it is not usable."""
    try:
        doc = jsonbody.loads(body)
    except jsonbody.Unreadable as exc:
        raise MalformedPayload(exc.reason, str(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        raise MalformedPayload("not_an_event", "not an object with a string 'event'")
    event: str = doc["event"]
    if not EVENT.fullmatch(event):
        raise MalformedPayload("invalid_event", "'event' is not 1-64 printable ASCII characters")
    kind = _adjustment_kind(event)
    if event != CHARGE_EVENT and kind is None:
        return Ignored(event=event)
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedPayload("data_not_object", f"{event}: 'data' is not an object")
    if kind is None:
        return _charge(data, _kept(event, data, CHARGE_KEPT))
    return _adjustment(event, kind, data, _kept(event, data, ADJUSTMENT_KEPT[kind]))


def _adjustment_kind(event: str) -> AdjustmentKind | None:
    if event.startswith("refund."):
        return AdjustmentKind.REFUND
    if event.startswith("charge.dispute."):
        return AdjustmentKind.DISPUTE
    return None


def _kept(event: str, data: dict[str, Any], fields: tuple[str, ...]) -> str:
    kept: dict[str, Any] = {}
    for field in fields:
        *parents, name = field.split(".")
        source, target = data, kept
        for parent in parents:
            inner = source.get(parent)
            source = inner if isinstance(inner, dict) else {}
            target = target.setdefault(parent, {})
        value = source.get(name, kept)  # ``kept``: a sentinel, never a value of ``data``
        if value is None or isinstance(value, str | int | float | bool):
            target[name] = value
    return json.dumps({"event": event, "data": kept}, separators=(",", ":"))


def _charge(data: dict[str, Any], kept: str) -> Charge:
    domain, currency = data.get("domain"), data.get("currency")
    amount = data.get("amount")
    # The amount of a charge is documented as an integer: a string here is not trusted.
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise MalformedPayload(
            "invalid_amount", "charge.success: 'amount' is not a non-negative integer"
        )
    if amount > MAX_AMOUNT_MINOR:
        raise MalformedPayload("amount_out_of_range", "charge.success: 'amount' exceeds 2^63-1")
    reference = _reference(CHARGE_EVENT, data.get("reference"))
    if domain not in ("live", "test"):
        raise MalformedPayload(
            "invalid_domain", "charge.success: 'domain' is neither live nor test"
        )
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise MalformedPayload(
            "invalid_currency", "charge.success: 'currency' is not three capital letters"
        )
    return Charge(
        event=CHARGE_EVENT,
        reference=reference,
        domain=domain,
        amount_minor=amount,
        currency=currency,
        paid_at=_timestamp(data.get("paid_at") or data.get("paidAt")),
        kept=kept,
    )


def _adjustment(event: str, kind: AdjustmentKind, data: dict[str, Any], kept: str) -> Adjustment:
    if kind is AdjustmentKind.REFUND:
        reference = data.get("transaction_reference")
    else:
        transaction = data.get("transaction")
        reference = transaction.get("reference") if isinstance(transaction, dict) else None
    amount = data.get("amount")
    amount_minor = minor_units(amount)
    if amount is not None and amount_minor is None:
        raise MalformedPayload(
            "invalid_amount", f"{kind.value}: 'amount' is not a number of subunits below 2^63"
        )
    return Adjustment(
        event=event,
        kind=kind,
        reference=_reference(kind.value, reference),
        amount_minor=amount_minor,
        kept=kept,
    )


def _reference(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedPayload("missing_reference", f"{what}: the reference is missing")
    if not REFERENCE.fullmatch(value):
        raise MalformedPayload(
            "invalid_reference", f"{what}: the reference is not 1-128 printable ASCII characters"
        )
    return value


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        # In UTC now: an offset at the edge of year 1 or 9999 cannot be stored (OverflowError).
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None
