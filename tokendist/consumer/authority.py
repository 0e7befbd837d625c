"""Only real payments pay: the check that makes PostgreSQL, not Kafka, the authority.

Anyone who can write to the payments topic can write a well-formed ``PaymentConfirmed``.
What they cannot do without the database is the row ``outbox.enqueue`` writes in the
payment's own transaction (``payment_confirmations``). Before a distribution is even
claimed, the event must match that row: same event id, and the same investment, user,
tokenization, tokens, amount, currency, wallet and provider reference as the payment
that was confirmed. Anything else is refused (dead-lettered, alert): nothing is signed.
"""

from __future__ import annotations

from pydantic import ValidationError

from tokendist.consumer.repository import Confirmation
from tokendist.core.errors import InvalidEvent
from tokendist.schemas import PaymentConfirmedV1

# The refusals that mean someone wrote to the topic what no payment confirmed.
REFUSALS = frozenset({"unconfirmed_payment", "payment_mismatch"})

# Rows written before the payload was kept (migration 0002) carry only these columns.
COLUMNS = (
    "investment_id",
    "user_id",
    "tokenization_id",
    "tokens",
    "provider",
    "provider_reference",
)


def differences(confirmed: Confirmation, event: PaymentConfirmedV1) -> list[str]:
    """The fields of ``event.data`` that are not what the payment's transaction wrote."""
    if confirmed.payload is None:
        return [f for f in COLUMNS if getattr(confirmed, f) != getattr(event.data, f)]
    try:
        original = PaymentConfirmedV1.model_validate_json(confirmed.payload)
    except ValidationError:
        return ["payload"]  # unreadable on our own side: refuse rather than trust the event
    if original.event_id != event.event_id:
        return ["event_id"]
    return [
        name
        for name in type(event.data).model_fields
        if getattr(original.data, name) != getattr(event.data, name)
    ]


def check(confirmed: Confirmation | None, event: PaymentConfirmedV1) -> None:
    """Raise ``InvalidEvent`` unless ``event`` is the confirmed payment ``confirmed``."""
    if confirmed is None:
        raise InvalidEvent(
            "unconfirmed_payment", f"no confirmed payment has event id {event.event_id}"
        )
    differing = differences(confirmed, event)
    if differing:
        raise InvalidEvent(
            "payment_mismatch",
            f"event {event.event_id} differs from its confirmed payment in: "
            + ", ".join(differing),
        )
