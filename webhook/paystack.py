"""Paystack's webhook protocol, as pure functions: the signature and the payloads.

The signature is checked over the raw body bytes before anything parses them; hashing a
re-serialised document instead is the classic bug (whitespace, key order and escapes all
change the bytes). Payloads are read leniently where Paystack is loose (``metadata`` is
seen as 0, "", null or an object; a refund's amount is a string) and strictly where money
is concerned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

PROVIDER = "paystack"
SIGNATURE_HEADER = "x-paystack-signature"


class Kind(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    DISPUTE = "dispute"
    OTHER = "other"


class MalformedPayload(ValueError):
    """The body is signed but cannot be read as the event it claims to be (answer 400)."""


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


@dataclass(frozen=True, slots=True)
class Charge:
    reference: str
    domain: str
    amount_minor: int
    currency: str
    paid_at: datetime | None


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A refund or dispute, against the charge ``reference``."""

    kind: Kind
    reference: str
    amount_minor: int | None


@dataclass(frozen=True, slots=True)
class Notification:
    event: str
    kind: Kind
    charge: Charge | None = None
    adjustment: Adjustment | None = None


def minor_units(value: object) -> int | None:
    """An amount in currency subunits: an integer, or a string of digits (refunds)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def parse(body: bytes) -> Notification:
    """Read a verified body; raises ``MalformedPayload`` when it is not usable."""
    try:
        # UTF-8 explicitly: json.loads would also guess UTF-16/32 from raw bytes.
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedPayload(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        raise MalformedPayload("not an object with a string 'event'")
    event: str = doc["event"]
    data = doc.get("data")
    kind = _kind(event)
    if kind is Kind.OTHER:
        return Notification(event=event, kind=kind)
    if not isinstance(data, dict):
        raise MalformedPayload(f"{event}: 'data' is not an object")
    if kind is Kind.CHARGE:
        return Notification(event=event, kind=kind, charge=_charge(data))
    return Notification(event=event, kind=kind, adjustment=_adjustment(kind, data))


def _kind(event: str) -> Kind:
    if event == "charge.success":
        return Kind.CHARGE
    if event.startswith("refund."):
        return Kind.REFUND
    if event.startswith("charge.dispute."):
        return Kind.DISPUTE
    return Kind.OTHER


def _charge(data: dict[str, Any]) -> Charge:
    reference, domain, currency = data.get("reference"), data.get("domain"), data.get("currency")
    amount = data.get("amount")
    # The amount of a charge is documented as an integer: a string here is not trusted.
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise MalformedPayload("charge.success: 'amount' is not a non-negative integer")
    if not isinstance(reference, str) or not reference:
        raise MalformedPayload("charge.success: 'reference' is missing")
    if domain not in ("live", "test"):
        raise MalformedPayload("charge.success: 'domain' is neither live nor test")
    if not isinstance(currency, str) or not currency:
        raise MalformedPayload("charge.success: 'currency' is missing")
    return Charge(
        reference=reference,
        domain=domain,
        amount_minor=amount,
        currency=currency,
        paid_at=_timestamp(data.get("paid_at") or data.get("paidAt")),
    )


def _adjustment(kind: Kind, data: dict[str, Any]) -> Adjustment:
    if kind is Kind.REFUND:
        reference = data.get("transaction_reference")
    else:
        transaction = data.get("transaction")
        reference = transaction.get("reference") if isinstance(transaction, dict) else None
    if not isinstance(reference, str) or not reference:
        raise MalformedPayload(f"{kind.value}: the transaction reference is missing")
    return Adjustment(kind=kind, reference=reference, amount_minor=minor_units(data.get("amount")))


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
