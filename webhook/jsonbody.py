"""Reading a JSON request body strictly: one meaning per document, or a reason why not.

Python's ``json`` is lenient where a money document must not be: of duplicate keys it keeps
the last (``{"amount": 1, "amount": 100}`` reads as 100 here and maybe as 1 elsewhere),
it accepts ``NaN`` and ``Infinity``, it converts an integer of any length (past 4,300
digits it raises a bare ``ValueError``) and it recurses once per nesting level (raising
``RecursionError``). Each of these is an ``Unreadable`` with a machine-readable reason.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

# Longer than any amount, id or timestamp a provider sends (a BIGINT has 19 digits).
MAX_INT_DIGITS = 32


class Unreadable(ValueError):
    """Not one well-defined JSON document; ``reason`` says why, for the answer and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        twice = next(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise Unreadable("duplicate_key", f"the key {twice[:64]!r} appears more than once")
    return doc


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise Unreadable("number_too_long", f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _constant(name: str) -> Any:
    raise Unreadable("invalid_json", f"{name} is not JSON")


def loads(body: bytes) -> Any:
    """The document in ``body`` (UTF-8 JSON); raises ``Unreadable``."""
    try:
        # UTF-8 explicitly: json.loads would also guess UTF-16/32 from raw bytes.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable("not_utf8", f"not UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(
            text, object_pairs_hook=_object, parse_int=_integer, parse_constant=_constant
        )
    except json.JSONDecodeError as exc:
        raise Unreadable("invalid_json", f"not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise Unreadable("too_deep", "nested deeper than the parser's recursion limit") from None
