"""Compiled contract artifacts and the ABI facts the code relies on.

The artifacts are package data (``tokendist/consumer/abi``, written by
``node contracts/compile.mjs``), so an installed wheel finds them like the migrations."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from eth_utils.crypto import keccak

ABI_DIR = resources.files("tokendist.consumer").joinpath("abi")

DISTRIBUTED_TOPIC = "0x" + keccak(text="Distributed(bytes32,address,uint256)").hex()
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


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
