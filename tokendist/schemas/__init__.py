"""Event contracts shared with upstream producers: a versioned envelope and its payloads."""

from tokendist.schemas.events import (
    MAX_AMOUNT_MINOR,
    MAX_EVENT_BYTES,
    MAX_TOKEN_UNITS,
    SUPPORTED,
    PaymentConfirmedData,
    PaymentConfirmedV1,
    parse_event,
)

__all__ = [
    "MAX_AMOUNT_MINOR",
    "MAX_EVENT_BYTES",
    "MAX_TOKEN_UNITS",
    "SUPPORTED",
    "PaymentConfirmedData",
    "PaymentConfirmedV1",
    "parse_event",
]
