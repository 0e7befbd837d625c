"""Paystack as a ``PaymentProvider``: its wire format (``webhook/paystack.py``, pure
functions) behind the Protocol, and its Verify Transaction API (``webhook/verifier.py``)
as the optional confirmation (``TOKENDIST_PAYSTACK_VERIFY``)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from tokendist.core.settings import WebhookSettings
from tokendist.webhook import paystack
from tokendist.webhook.providers.base import Domain, Notice, Verification
from tokendist.webhook.verifier import PaystackVerifier


class Paystack:
    name = paystack.PROVIDER

    def __init__(
        self, secret_key: SecretStr, mode: Domain, *, verifier: PaystackVerifier | None = None
    ) -> None:
        self.mode: Domain = mode
        # Paystack has no separate webhook secret: the API's secret key signs the bodies.
        self._secret = secret_key.get_secret_value().encode()
        self._verifier = verifier

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> Paystack:
        secret = settings.require_webhook()
        verifier = (
            PaystackVerifier(settings.paystack_api_url, secret)
            if settings.paystack_verify
            else None
        )
        return cls(secret, settings.paystack_mode, verifier=verifier)

    def verify_signature(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        return paystack.signature_ok(self._secret, raw, headers.get(paystack.SIGNATURE_HEADER))

    def parse(self, raw: bytes) -> Notice:
        return paystack.parse(raw)

    async def confirm(self, reference: str) -> Verification | None:
        return None if self._verifier is None else await self._verifier.verify(reference)

    async def close(self) -> None:
        if self._verifier is not None:
            await self._verifier.close()
