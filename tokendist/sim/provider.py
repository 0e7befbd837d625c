"""A stand-in for Paystack's side: notifications as it builds, signs and delivers them.

Used by the demo's simulated payment service, the benchmark and the tests, so all three
send exactly what the provider sends (compact JSON, a signature over those bytes).
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp

from tokendist.webhook.paystack import SIGNATURE_HEADER, signature

_ids = itertools.count(3_000_000_000)


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def charge_success(
    reference: str,
    amount_minor: int,
    *,
    currency: str = "NGN",
    domain: str = "live",
    metadata: object = None,
    paid_at: datetime | None = None,
) -> bytes:
    moment = (paid_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    return encode(
        {
            "event": "charge.success",
            "data": {
                "id": next(_ids),
                "domain": domain,
                "status": "success",
                "reference": reference,
                "amount": amount_minor,
                "currency": currency,
                "paid_at": moment.replace("+00:00", "Z"),
                "channel": "card",
                "fees": min(amount_minor * 15 // 1000 + 10_000, 200_000),
                "customer": {"id": 84312, "email": "investor@example.com"},
                "metadata": metadata,
            },
        }
    )


def refund_processed(reference: str, amount_minor: int, *, currency: str = "NGN") -> bytes:
    # Paystack sends a refund's amount as a string.
    return encode(
        {
            "event": "refund.processed",
            "data": {
                "id": next(_ids),
                "status": "processed",
                "transaction_reference": reference,
                "amount": str(amount_minor),
                "currency": currency,
            },
        }
    )


def dispute(reference: str, event: str = "charge.dispute.create") -> bytes:
    return encode(
        {
            "event": event,
            "data": {
                "id": next(_ids),
                "status": "awaiting-merchant-feedback",
                "transaction": {"reference": reference},
            },
        }
    )


class Provider:
    """Delivers signed notifications to a receiver's URL, as Paystack's servers do."""

    def __init__(self, url: str, secret_key: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._secret = secret_key.encode()
        self._session = session

    def sign(self, body: bytes) -> str:
        return signature(self._secret, body)

    async def deliver(
        self, body: bytes, *, signed_as: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """POST ``body``; ``signed_as`` overrides the signature header (tests)."""
        sent = {
            "content-type": "application/json",
            SIGNATURE_HEADER: self.sign(body) if signed_as is None else signed_as,
            **(headers or {}),
        }
        async with self._session.post(self.url, data=body, headers=sent) as resp:
            return resp.status, await resp.text()
