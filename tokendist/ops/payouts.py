"""Payouts per payment read from the chain's logs (the Distributor v2's ``Distributed``
logs paired with the token's ``Transfer`` logs, ``contracts.payouts``): what verify,
reconcile and auditors compare the database with.

Two ``eth_getLogs`` calls per question: the Distributor's ``Distributed`` logs (all, or
those of one payment id, its indexed topic) and the token's ``Transfer`` logs sent by the
Distributor over the same blocks.
"""

from __future__ import annotations

from typing import Any

from web3 import AsyncWeb3

from tokendist.consumer import contracts
from tokendist.consumer.chain import guarded


def _topic_of(address: str) -> str:
    return "0x" + bytes.fromhex(address[2:]).rjust(32, b"\0").hex()


async def _logs(w3: AsyncWeb3[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    found: Any = params
    return [dict(entry) for entry in await guarded(lambda: w3.eth.get_logs(found))]


async def read_payouts(
    w3: AsyncWeb3[Any],
    *,
    distributor: str,
    token: str,
    payment_id: bytes | None = None,
    from_block: int = 0,
) -> list[contracts.Payout]:
    """Every payout of ``distributor`` since ``from_block`` (or only ``payment_id``'s:
    more than one means it was paid twice)."""
    topics: list[Any] = [contracts.DISTRIBUTED_TOPIC]
    if payment_id is not None:
        topics.append("0x" + payment_id.hex())
    distributed = await _logs(
        w3,
        {
            "address": AsyncWeb3.to_checksum_address(distributor),
            "fromBlock": from_block,
            "toBlock": "latest",
            "topics": topics,
        },
    )
    if not distributed:
        return []
    # Only the blocks that hold a Distributed log: the Transfers paired with them are there.
    blocks = [int(entry["blockNumber"]) for entry in distributed]
    transfers = await _logs(
        w3,
        {
            "address": AsyncWeb3.to_checksum_address(token),
            "fromBlock": min(blocks),
            "toBlock": max(blocks),
            "topics": [contracts.TRANSFER_TOPIC, _topic_of(distributor)],
        },
    )
    return contracts.payouts(distributed + transfers)
