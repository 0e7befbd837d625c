"""Reading a JSON request body strictly: one meaning per document, or a reason why not.

Python's ``json`` is lenient where a money document must not be: of duplicate keys it keeps
the last (``{"amount": 1, "amount": 100}`` reads as 100 here and maybe as 1 elsewhere),
it accepts ``NaN`` and ``Infinity``, it converts an integer of any length (past 4,300
digits it raises a bare ``ValueError``) and it recurses once per nesting level: where it
stops depends on the process's recursion limit (a library may raise it, and then the C
stack is the limit). Each of these is an ``Unreadable`` with a machine-readable reason;
nesting is measured before parsing, against a limit of our own.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import accumulate
from typing import Any

from tokendist.core.errors import Unreadable as Unreadable  # noqa: PLC0414 -- still importable from here

# Longer than any amount, id or timestamp a provider sends (a BIGINT has 19 digits).
MAX_INT_DIGITS = 32
# Deeper than any document a provider or the platform sends (Paystack's: about 5).
MAX_DEPTH = 32
# A string, or the rest of the body after an unterminated quote: one pass, no rescans.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


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


def depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (exact for valid JSON)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def loads(body: bytes) -> Any:
    """The document in ``body`` (UTF-8 JSON); raises ``Unreadable``."""
    if depth(body) > MAX_DEPTH:
        raise Unreadable("too_deep", f"arrays or objects nest deeper than {MAX_DEPTH}")
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
