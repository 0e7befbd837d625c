"""The optional second check: Paystack's Verify Transaction API.

A webhook with a valid signature is already the provider speaking; asking again costs a
round trip per payment, so it is off by default (``TOKENDIST_PAYSTACK_VERIFY``). The
Paystack plug-in's ``confirm`` asks it (``webhook/providers/paystack.py``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from tokendist.core.errors import ProviderUnavailable
from tokendist.webhook.paystack import minor_units
from tokendist.webhook.providers.base import Verification

NOT_FOUND = "not_found"


class PaystackVerifier:
    def __init__(self, api_url: str, secret_key: SecretStr, *, timeout_s: float = 10.0) -> None:
        self._api_url = api_url.rstrip("/")
        self._secret_key = secret_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def verify(self, reference: str) -> Verification:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"{self._api_url}/transaction/verify/{quote(reference, safe='')}"
        headers = {"Authorization": f"Bearer {self._secret_key.get_secret_value()}"}
        try:
            async with self._session.get(url, headers=headers) as resp:
                if resp.status == 404:
                    return Verification(status=NOT_FOUND, amount_minor=None, currency=None)
                if resp.status != 200:
                    raise ProviderUnavailable(f"verify answered HTTP {resp.status}")
                doc: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"verify failed: {type(exc).__name__}") from exc
        return _verification(doc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _verification(doc: Any) -> Verification:
    # The outer ``status`` only says the API call worked; the payment's is ``data.status``.
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise ProviderUnavailable("verify answered without a data object")
    status, currency = data.get("status"), data.get("currency")
    return Verification(
        status=status if isinstance(status, str) else "unknown",
        amount_minor=minor_units(data.get("amount")),
        currency=currency if isinstance(currency, str) else None,
    )
