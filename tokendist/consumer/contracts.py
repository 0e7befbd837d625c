"""Compiled contract artifacts and the ABI facts the code relies on: the Distributor v2's
batch calldata, and its logs decoded into per-payment outcomes and payouts.

The artifacts are package data (``tokendist/consumer/abi``, written by
``node contracts/compile.mjs``), so an installed wheel finds them like the migrations.

Everything here is pure: logs come in as web3 returns them (``HexBytes``, ints) or as the
raw JSON-RPC answer (0x-hex strings), both decoded alike.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_typing import HexStr
from eth_utils.crypto import keccak

ABI_DIR = resources.files("tokendist.consumer").joinpath("abi")

AMOUNT_BITS = 96
AMOUNT_LIMIT = 2**AMOUNT_BITS  # an amount must be below it: 96 bits of a packed word
MAX_INDEX = 2**256 - 1

DISTRIBUTED_TOPIC = "0x" + keccak(text="Distributed(bytes32,uint256)").hex()
ALREADY_PAID_TOPIC = "0x" + keccak(text="AlreadyPaid(bytes32,uint256)").hex()
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")

BATCH_TYPES = ("uint256", "bytes32[]", "uint256[]")


@cache
def artifact(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ABI_DIR.joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return data


def abi(name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = artifact(name)["abi"]
    return result


@cache
def error_selectors(name: str) -> dict[str, str]:
    """4-byte selector (0x-hex) of each custom error → its name."""
    found = {}
    for item in abi(name):
        if item["type"] == "error":
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            found["0x" + keccak(text=signature)[:4].hex()] = item["name"]
    return found


@cache
def function(name: str, function_name: str) -> tuple[bytes, tuple[str, ...]]:
    """The 4-byte selector and input types of a contract function, from its ABI."""
    for item in abi(name):
        if item["type"] == "function" and item["name"] == function_name:
            types = tuple(i["type"] for i in item["inputs"])
            return keccak(text=f"{function_name}({','.join(types)})")[:4], types
    raise KeyError(f"{name} has no function {function_name}")


def payment_id(investment_id: str) -> bytes:
    """The Distributor's once-only key for an investment."""
    return keccak(text=f"tokendist:investment:{investment_id}")


# --- calldata -------------------------------------------------------------------------


def _address_bytes(address: str) -> bytes:
    text = address[2:] if address[:2] in ("0x", "0X") else ""
    try:
        raw = bytes.fromhex(text) if len(text) == 40 else b""
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ValueError(f"not an address: {address!r:.60}")
    if not any(raw):
        raise ValueError("recipient is the zero address")
    return raw


def pack(to: str, amount: int) -> int:
    """One payment's calldata word: ``uint160(to) << 96 | amount``."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"amount must be an integer, not {type(amount).__name__}")
    if not 0 < amount < AMOUNT_LIMIT:
        raise ValueError(f"amount {amount} outside 1..2**{AMOUNT_BITS}-1")
    return int.from_bytes(_address_bytes(to), "big") << AMOUNT_BITS | amount


def batch_calldata(first_index: int, payments: Sequence[tuple[bytes, str, int]]) -> HexStr:
    """``distributeBatch`` calldata: payment i of ``payments`` (payment id, recipient,
    amount) gets index ``first_index + i``. Refuses (ValueError) whatever the contract
    would revert on, so that no nonce is spent on it."""
    if not payments:
        raise ValueError("a batch needs at least one payment")
    if isinstance(first_index, bool) or not isinstance(first_index, int):
        raise ValueError("first index must be an integer")
    if not 0 <= first_index <= MAX_INDEX - (len(payments) - 1):
        raise ValueError(f"indices {first_index}.. +{len(payments)} outside 0..2**256-1")
    ids, words = [], []
    for pid, to, amount in payments:
        if not isinstance(pid, bytes) or len(pid) != 32:
            raise ValueError("a payment id is 32 bytes")
        ids.append(pid)
        words.append(pack(to, amount))
    selector, _ = function("Distributor", "distributeBatch")
    return HexStr("0x" + (selector + abi_encode(BATCH_TYPES, [first_index, ids, words])).hex())


def decode_batch_calldata(data: str | bytes) -> tuple[int, list[tuple[bytes, str, int]]]:
    """The inverse of ``batch_calldata``: (first index, [(payment id, recipient, amount)])
    with recipients as lowercase 0x-hex. ValueError if it is not ``distributeBatch``."""
    raw = _bytes(data)
    selector, _ = function("Distributor", "distributeBatch")
    if raw[:4] != selector:
        raise ValueError("not distributeBatch calldata")
    try:
        first_index, ids, words = abi_decode(BATCH_TYPES, raw[4:])
    except Exception as exc:  # eth_abi raises a dozen unrelated types for bad input
        raise ValueError(f"malformed distributeBatch calldata: {exc}") from exc
    if len(ids) != len(words):
        raise ValueError(f"{len(ids)} payment ids but {len(words)} packed payments")
    payments = [
        (bytes(pid), "0x" + (word >> AMOUNT_BITS).to_bytes(20, "big").hex(), word % AMOUNT_LIMIT)
        for pid, word in zip(ids, words, strict=True)
    ]
    return first_index, payments


# --- logs -----------------------------------------------------------------------------


class Result(enum.Enum):
    PAID = "paid"  # this transaction paid it (``Distributed``)
    ALREADY_PAID = "already_paid"  # an earlier transaction had (``AlreadyPaid``): skipped


@dataclass(frozen=True, slots=True)
class Outcome:
    payment_id: bytes
    index: int
    result: Result


@dataclass(frozen=True, slots=True)
class Payout:
    """One payment paid on-chain: the ``Distributed`` log and the ``Transfer`` it caused.
    ``to`` is lowercase 0x-hex; ``log_index`` is the ``Distributed`` log's."""

    payment_id: bytes
    index: int
    to: str
    amount: int
    tx_hash: str
    block_number: int
    log_index: int


def _bytes(value: str | bytes) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value)
    return bytes(value)


def _int(value: str | int) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _topic0(entry: Mapping[str, Any]) -> str:
    topics = entry.get("topics") or []
    return "0x" + _bytes(topics[0]).hex() if topics else ""


def _index_of(entry: Mapping[str, Any]) -> int:
    return int.from_bytes(_bytes(entry["data"])[:32], "big")


def batch_outcomes(logs: Iterable[Mapping[str, Any]]) -> list[Outcome]:
    """Each payment of one batch's receipt, in the batch's order: paid by it or already
    paid before. Logs of other topics (the token's ``Transfer``) are ignored."""
    found = []
    for entry in logs:
        kind = _topic0(entry)
        if kind in (DISTRIBUTED_TOPIC, ALREADY_PAID_TOPIC):
            result = Result.PAID if kind == DISTRIBUTED_TOPIC else Result.ALREADY_PAID
            found.append(Outcome(_bytes(entry["topics"][1]), _index_of(entry), result))
    return found


@dataclass(frozen=True, slots=True)
class Paid:
    """A ``Distributed`` log alone: which payment, at which index, by which transaction."""

    payment_id: bytes
    index: int
    tx_hash: str
    block_number: int


def paid(logs: Iterable[Mapping[str, Any]]) -> list[Paid]:
    """The ``Distributed`` logs among ``logs`` (others are ignored), in their order."""
    return [
        Paid(
            _bytes(entry["topics"][1]),
            _index_of(entry),
            "0x" + _bytes(entry["transactionHash"]).hex(),
            _int(entry["blockNumber"]),
        )
        for entry in logs
        if _topic0(entry) == DISTRIBUTED_TOPIC
    ]


def payouts(logs: Iterable[Mapping[str, Any]]) -> list[Payout]:
    """Every payout among ``logs``: the Distributor's ``Distributed`` logs and the token's
    ``Transfer`` logs of the same transactions (others are ignored), ordered by block and
    log index.

    Pairing: ``distributeBatch`` emits ``Distributed`` and then calls the token's
    ``transfer``, whose only log is its ``Transfer``; so the ``Transfer`` paying a payment
    is the log right after its ``Distributed`` in the same transaction (log index + 1),
    sent from the Distributor. Anything else is not a payout of this contract and raises
    ValueError rather than being guessed at."""
    by_position: dict[tuple[str, int], Mapping[str, Any]] = {}
    distributed = []
    for entry in logs:
        kind = _topic0(entry)
        if kind not in (DISTRIBUTED_TOPIC, TRANSFER_TOPIC):
            continue
        tx_hash = "0x" + _bytes(entry["transactionHash"]).hex()
        by_position[(tx_hash, _int(entry["logIndex"]))] = entry
        if kind == DISTRIBUTED_TOPIC:
            distributed.append((tx_hash, entry))
    found = []
    for tx_hash, entry in distributed:
        log_index = _int(entry["logIndex"])
        transfer = by_position.get((tx_hash, log_index + 1))
        where = f"Distributed log {log_index} of {tx_hash}"
        if transfer is None or _topic0(transfer) != TRANSFER_TOPIC:
            raise ValueError(f"{where} is not followed by a Transfer log")
        sender = _bytes(transfer["topics"][1])[-20:]
        if sender != _bytes(entry["address"]):
            raise ValueError(f"{where}: the Transfer after it is not sent by the Distributor")
        found.append(
            Payout(
                payment_id=_bytes(entry["topics"][1]),
                index=_index_of(entry),
                to="0x" + _bytes(transfer["topics"][2])[-20:].hex(),
                amount=int.from_bytes(_bytes(transfer["data"]), "big"),
                tx_hash=tx_hash,
                block_number=_int(entry["blockNumber"]),
                log_index=log_index,
            )
        )
    found.sort(key=lambda p: (p.block_number, p.log_index))
    return found
