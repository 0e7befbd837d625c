"""``PaymentConfirmed`` v1 and its envelope.

Wire format (JSON, UTF-8)::

    {"event_id": "<uuid>", "event_type": "PaymentConfirmed", "schema_version": 1,
     "occurred_at": "2026-11-25T10:00:00Z", "data": {...}}

Token amounts travel as decimal strings of base units: they exceed 2**53, which JSON
numbers cannot carry exactly in most producers' languages. Fiat amounts are integers in
minor units, capped at 2**53 - 1 for the same reason.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from eth_utils.address import is_checksum_address
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from tokendist.core.errors import InvalidEvent

MAX_TOKEN_UNITS = 2**256 - 1  # what the ERC-20 can represent
MAX_AMOUNT_MINOR = 2**53 - 1  # what every JSON producer can represent exactly
MAX_EVENT_BYTES = 64 * 1024


def _token_units(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("must be a string of decimal digits (base units)")
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        raise ValueError("must be a string of decimal digits without sign or leading zeros")
    units = int(value)
    if units <= 0:
        raise ValueError("must be positive")
    if units > MAX_TOKEN_UNITS:
        raise ValueError("exceeds uint256")
    return units


def _checksum_address(value: str) -> str:
    if not is_checksum_address(value):
        raise ValueError("must be an EIP-55 checksummed 0x address")
    return value


TokenUnits = Annotated[
    int,
    BeforeValidator(_token_units),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^[1-9][0-9]{0,77}$"}),
]
ChecksumAddress = Annotated[
    str, Field(pattern=r"^0x[0-9a-fA-F]{40}$"), AfterValidator(_checksum_address)
]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PaymentConfirmedData(_Strict):
    user_id: Identifier
    investment_id: Identifier
    tokenization_id: Identifier
    property_id: Identifier
    tokens: TokenUnits
    amount_minor: Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    wallet_address: ChecksumAddress | None
    provider: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")]
    provider_reference: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    ]


class PaymentConfirmedV1(_Strict):
    event_id: uuid.UUID
    event_type: Literal["PaymentConfirmed"] = "PaymentConfirmed"
    schema_version: Literal[1] = 1
    occurred_at: AwareDatetime
    data: PaymentConfirmedData

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def new(cls, *, occurred_at: datetime, **data: Any) -> PaymentConfirmedV1:
        """Build an event with a fresh id; ``tokens`` may be given as an int."""
        if isinstance(data.get("tokens"), int):
            data["tokens"] = str(data["tokens"])
        return cls.model_validate(
            {"event_id": uuid.uuid4(), "occurred_at": occurred_at, "data": data}, strict=False
        )


SUPPORTED: dict[str, dict[int, type[PaymentConfirmedV1]]] = {
    "PaymentConfirmed": {1: PaymentConfirmedV1}
}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_event(raw: bytes | None) -> PaymentConfirmedV1:
    """Decode and validate one message value, or raise ``InvalidEvent`` with a reason code."""
    if raw is None:
        raise InvalidEvent("empty_message", "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"{len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", str(exc)) from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # Not only JSONDecodeError: an integer past Python's digit limit raises ValueError
        # and deep nesting RecursionError. Any failure to parse is the event's fault.
        raise InvalidEvent("malformed_json", f"{type(exc).__name__}: {exc}"[:500]) from None
    if not isinstance(doc, dict):
        raise InvalidEvent("malformed_json", "top level must be an object")
    event_type, version = doc.get("event_type"), doc.get("schema_version")
    versions = SUPPORTED.get(event_type) if isinstance(event_type, str) else None
    if versions is None:
        raise InvalidEvent("unknown_event_type", f"event_type {event_type!r} is not handled")
    model = versions.get(version) if type(version) is int else None
    if model is None:
        supported = ", ".join(str(v) for v in sorted(versions))
        raise InvalidEvent(
            "unsupported_schema_version",
            f"{event_type} schema_version {version!r} (supported: {supported})",
        )
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidEvent("invalid_schema", _describe(exc)) from None
