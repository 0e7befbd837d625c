"""The payment providers the settings enable: the one place a provider is switched on."""

from __future__ import annotations

from tokendist.core.settings import WebhookSettings
from tokendist.webhook.providers.base import PaymentProvider
from tokendist.webhook.providers.paystack import Paystack


def enabled(settings: WebhookSettings) -> list[PaymentProvider]:
    """Every provider whose secret is set (Paystack: ``TOKENDIST_PAYSTACK_SECRET_KEY``).

    Raises ``SettingsError`` naming what to set when none is: a receiver answering every
    webhook 404 is a mistake, not a configuration.
    """
    providers: list[PaymentProvider] = []
    if settings.paystack_secret_key is not None:
        providers.append(Paystack.from_settings(settings))
    if not providers:
        settings.require_webhook()  # raises, naming the variable
    return providers
