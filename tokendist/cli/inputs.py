"""What the ``tokendist`` command line accepts: argparse ``type=`` validators and the
checks on secrets read from the environment.

Every value is refused at parse time, before a connection is opened, a row written or a
contract deployed; argparse turns an ``ArgumentTypeError`` into one line and exit 2.
The rules that also bind upstream events (identifiers, token amounts) are the event
schema's own, not copies of them.
"""

from __future__ import annotations

import argparse
import math
import re
from datetime import datetime
from typing import Any

from eth_keys.constants import SECPK1_N
from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address
from pydantic import TypeAdapter, ValidationError

from tokendist.core import settings
from tokendist.schemas.events import Identifier, TokenUnits

ZERO_ADDRESS = "0x" + "00" * 20
PRIVATE_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
PAYSTACK_KEY = re.compile(r"sk_(live|test)_[A-Za-z0-9]+")
# PostgreSQL's rule for replication slot names.
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_identifier: TypeAdapter[str] = TypeAdapter(Identifier)
_token_units: TypeAdapter[int] = TypeAdapter(TokenUnits)


def _first_error(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def identifier(value: str) -> str:
    """A user, tokenization or property id: the events' ``Identifier`` rule."""
    try:
        return _identifier.validate_python(value)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an id: 1-64 characters of A-Z a-z 0-9 _ . : -"
        ) from None


def token_units(value: str) -> int:
    """A positive amount of base units that fits a uint256, in plain decimal digits."""
    try:
        return _token_units.validate_python(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {_first_error(exc)}") from None


def integer(low: int, high: int | None = None) -> Any:
    """An int within [low, high]; argparse's own ``int`` accepts any sign and size."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}")
        return number

    return parse


def slot_name(value: str) -> str:
    if SLOT_NAME.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a replication slot name: 1-63 characters of a-z 0-9 _"
        )
    return value


def seconds(value: str) -> float:
    """A finite, non-negative duration (``nan`` and ``inf`` parse as floats)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value} must be a finite number >= 0")
    return number


def interval(value: str) -> float:
    """Seconds between two runs of a periodic task: above 0 (else it spins), at most an hour."""
    number = seconds(value)
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"{value}: an interval is above 0 and at most 3600")
    return number


def rate(value: str) -> float:
    number = seconds(value)
    if number == 0:
        raise argparse.ArgumentTypeError("the rate must be above 0")
    return number


def label(max_chars: int) -> Any:
    """Free text shown to people (a token's name or symbol): printable, bounded."""

    def parse(value: str) -> str:
        if not value.strip() or not value.isprintable() or len(value) > max_chars:
            raise argparse.ArgumentTypeError(
                f"{value!r}: 1-{max_chars} printable characters, not only spaces"
            )
        return value

    return parse


def address(value: str) -> str:
    """An account address as EIP-55 or single-case hex, never the zero address; returned
    checksummed. A mixed-case address with a wrong checksum is a typo and refused."""
    single_case = value in (value.lower(), value.upper()[:1] + "x" + value.upper()[2:])
    if not (is_hex_address(value) and value.startswith("0x")) or not (
        single_case or is_checksum_address(value)
    ):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an address (0x and 40 hex digits, EIP-55 if mixed case)"
        )
    if value.lower() == ZERO_ADDRESS:
        raise argparse.ArgumentTypeError("the zero address burns what is sent to it")
    return str(to_checksum_address(value))


def tokenization_token(value: str) -> tuple[str, str]:
    """``TOKENIZATION=0xADDRESS``: a tokenization id and its token's address."""
    tokenization_id, sep, token = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r} is not TOKENIZATION=0xADDRESS")
    return identifier(tokenization_id), address(token)


def offsets(value: str) -> dict[int, int]:
    """``partition:offset,...``: at least one pair, each partition once."""
    found: dict[int, int] = {}
    for item in value.split(","):
        partition, offset = position(item)
        if partition in found:
            raise argparse.ArgumentTypeError(f"partition {partition} is given twice")
        found[partition] = offset
    return found


def position(value: str) -> tuple[int, int]:
    """``partition:offset`` of one Kafka record, both non-negative decimal integers."""
    partition, sep, offset = value.strip().partition(":")
    if not sep or not partition.isdecimal() or not offset.isdecimal():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not partition:offset (two non-negative integers, e.g. 3:120)"
        )
    return int(partition), int(offset)


def timestamp_ms(value: str) -> int:
    """An ISO-8601 moment with a time zone, as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(value)
        millis = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO-8601 time (e.g. 2026-11-25T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value}: give a time zone (e.g. ...Z or +01:00)")
    if millis < 0:
        raise argparse.ArgumentTypeError(f"{value} is before 1970")
    return millis


def instance_id(value: str) -> str:
    """A static group member's id (Kafka's rule, shared with the settings)."""
    try:
        return settings.instance_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r}: one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def is_private_key(value: str) -> bool:
    """64 hex digits (0x optional) naming a valid secp256k1 key; checked without parsing
    by eth_account, whose errors would echo the text."""
    return PRIVATE_KEY.fullmatch(value) is not None and 0 < int(value, 16) < SECPK1_N


def is_paystack_key(value: str) -> bool:
    return PAYSTACK_KEY.fullmatch(value) is not None
