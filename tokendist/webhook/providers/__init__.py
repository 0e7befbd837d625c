"""Payment providers as plug-ins of the webhook receiver.

The receiver (``webhook/app.py``, ``webhook/receiver.py``) talks only to
``base.PaymentProvider``: check a signature over the raw bytes, read the body into a
provider-neutral ``Charge``, ``Adjustment`` or ``Ignored``, optionally ask the provider's
API to confirm a charge. Each provider answers at ``POST /webhooks/{name}``.

To add one (Flutterwave, Stripe, ...): write ``providers/<name>.py`` with a class that
implements ``base.PaymentProvider``, and enable it in ``registry.enabled`` when its
settings are present. Nothing else in the receiver changes.

- ``base.py``: the Protocol, the neutral types and what they guarantee to the receiver.
- ``registry.py``: the providers enabled by the settings (the one composition point).
- ``paystack.py``: Paystack's plug-in, over its wire format (``webhook/paystack.py``)
  and its Verify Transaction API client (``webhook/verifier.py``).

This module imports nothing: ``webhook/paystack.py`` reads bodies into ``base``'s types,
and an import of the registry here would make that a cycle.
"""
