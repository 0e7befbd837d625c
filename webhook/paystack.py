"""Paystack's webhook protocol, as pure functions: the signature and the payloads.

The signature is checked over the raw body bytes before anything parses them; hashing a
re-serialised document instead is the classic bug (whitespace, key order and escapes all
change the bytes). Payloads are read leniently where Paystack is loose (``metadata`` is
seen as 0, "", null or an object; a refund's amount is a string) and strictly where money
is concerned. Every signed body that cannot be used is a ``MalformedPayload`` with a
machine-readable reason (answered 400): an amount that is not an integer, or one no
BIGINT holds (Paystack's amounts are kobo, far below 2^63); a reference, currency or
event name outside printable ASCII (PostgreSQL text refuses NUL; a lone surrogate is no
UTF-8 at all) and therefore never one the platform issued.

What is kept of a body (``Notification.kept``) is what reconciliation with Paystack
needs and no personal data: the customer's e-mail, names and phone, card details,
``metadata`` (the platform may put anything there) and dispute messages are dropped;
the customer's id and code let an operator find them in Paystack's dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tokendist.errors import MalformedPayload as MalformedPayload  # noqa: PLC0414 -- still importable from here
from webhook import jsonbody

PROVIDER = "paystack"
SIGNATURE_HEADER = "x-paystack-signature"
# What the platform may issue as a reference (the checkout API takes the same).
REFERENCE = re.compile(r"[\x21-\x7e]{1,128}")
CURRENCY = re.compile(r"[A-Z]{3}")
EVENT = re.compile(r"[\x21-\x7e]{1,64}")
MAX_AMOUNT_MINOR = 2**63 - 1  # what the BIGINT columns hold


class Kind(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    DISPUTE = "dispute"
    OTHER = "other"


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
    kept: str = "{}"  # the fields of the body worth storing, as compact JSON


# The fields of ``data`` kept per kind ("a.b": field b of the object a); scalars only.
KEPT_FIELDS = {
    Kind.CHARGE: (
        "id", "domain", "status", "reference", "amount", "currency", "paid_at", "paidAt",
        "channel", "fees", "customer.id", "customer.customer_code",
    ),
    Kind.REFUND: (
        "id", "domain", "status", "transaction_reference", "refund_reference", "amount",
        "currency",
    ),
    Kind.DISPUTE: (
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


def parse(body: bytes) -> Notification:
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
    data = doc.get("data")
    kind = _kind(event)
    if kind is Kind.OTHER:
        return Notification(event=event, kind=kind)
    if not isinstance(data, dict):
        raise MalformedPayload("data_not_object", f"{event}: 'data' is not an object")
    kept = json.dumps(
        {"event": event, "data": _kept(data, KEPT_FIELDS[kind])}, separators=(",", ":")
    )
    if kind is Kind.CHARGE:
        return Notification(event=event, kind=kind, charge=_charge(data), kept=kept)
    return Notification(event=event, kind=kind, adjustment=_adjustment(kind, data), kept=kept)


def _kind(event: str) -> Kind:
    if event == "charge.success":
        return Kind.CHARGE
    if event.startswith("refund."):
        return Kind.REFUND
    if event.startswith("charge.dispute."):
        return Kind.DISPUTE
    return Kind.OTHER


def _kept(data: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
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
    return kept


def _charge(data: dict[str, Any]) -> Charge:
    domain, currency = data.get("domain"), data.get("currency")
    amount = data.get("amount")
    # The amount of a charge is documented as an integer: a string here is not trusted.
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise MalformedPayload(
            "invalid_amount", "charge.success: 'amount' is not a non-negative integer"
        )
    if amount > MAX_AMOUNT_MINOR:
        raise MalformedPayload("amount_out_of_range", "charge.success: 'amount' exceeds 2^63-1")
    reference = _reference("charge.success", data.get("reference"))
    if domain not in ("live", "test"):
        raise MalformedPayload(
            "invalid_domain", "charge.success: 'domain' is neither live nor test"
        )
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise MalformedPayload(
            "invalid_currency", "charge.success: 'currency' is not three capital letters"
        )
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
    amount = data.get("amount")
    amount_minor = minor_units(amount)
    if amount is not None and amount_minor is None:
        raise MalformedPayload(
            "invalid_amount", f"{kind.value}: 'amount' is not a number of subunits below 2^63"
        )
    return Adjustment(
        kind=kind, reference=_reference(kind.value, reference), amount_minor=amount_minor
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
