"""What the receiver needs of a payment provider, and the provider-neutral notices it reads.

A provider's ``parse`` guarantees what the database and the event schema rely on, so the
receiver checks none of it again: a reference of 1-128 printable ASCII characters (the
checkout API issues no other, and PostgreSQL text refuses NUL), an amount in minor units
within a BIGINT, a currency of three capital letters, an event name of 1-64 printable
ASCII characters, and ``kept``: what of the body is stored, as compact JSON without
personal data. A signed body that cannot be read so is a ``MalformedPayload`` with a
machine-readable reason, answered 400: the provider retries, and someone looks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

# Which of the provider's environments a payment happened in; a receiver takes one.
Domain = Literal["live", "test"]
# A provider's name: its route segment and the ``provider`` of every row it causes.
NAME = re.compile(r"[a-z][a-z0-9_]{1,31}")
# What the platform may issue as a reference (the checkout API takes the same).
REFERENCE = re.compile(r"[\x21-\x7e]{1,128}")
CURRENCY = re.compile(r"[A-Z]{3}")
EVENT = re.compile(r"[\x21-\x7e]{1,64}")
MAX_AMOUNT_MINOR = 2**63 - 1  # what the BIGINT columns hold


class AdjustmentKind(StrEnum):
    REFUND = "refund"
    DISPUTE = "dispute"


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge:
    """A successful payment: it confirms the pending investment of (provider,
    ``reference``) when its amount, currency and domain are those expected."""

    event: str
    reference: str
    domain: Domain
    amount_minor: int
    currency: str
    paid_at: datetime | None
    kept: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Adjustment:
    """A refund or dispute against the charge ``reference``: recorded and alerted on."""

    event: str
    kind: AdjustmentKind
    reference: str
    amount_minor: int | None
    kept: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    """An event this system does not act on: answered 200, nothing written."""

    event: str


Notice = Charge | Adjustment | Ignored


@dataclass(frozen=True, slots=True)
class Verification:
    """The provider's own view of a transaction, asked through its API.

    A charge is confirmed only when ``status`` is ``"success"`` and the amount and
    currency are the notice's.
    """

    status: str
    amount_minor: int | None
    currency: str | None


class PaymentProvider(Protocol):
    """A payment provider's webhooks, as the receiver uses them (in this order)."""

    @property
    def name(self) -> str:
        """The route segment (``POST /webhooks/{name}``), matching ``NAME``."""
        ...

    @property
    def mode(self) -> Domain:
        """The domain this receiver takes; a charge of the other one is flagged."""
        ...

    def verify_signature(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` carry the provider's signature of exactly ``raw``.

        Called before anything reads ``raw``; compares in constant time; False for a
        missing or odd-looking header (header names are looked up in lowercase).
        """
        ...

    def parse(self, raw: bytes) -> Notice:
        """The notice in a verified body; raises ``MalformedPayload``."""
        ...

    async def confirm(self, reference: str) -> Verification | None:
        """The provider's view of the charge ``reference``, or None when it is not asked.

        Called outside any transaction; raises ``ProviderUnavailable`` when the provider
        cannot answer now (the webhook is answered 503 and retried).
        """
        ...

    async def close(self) -> None:
        """Release what ``confirm`` opened; harmless when called again."""
        ...
