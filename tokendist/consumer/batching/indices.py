"""The index floor: before a member assigns any index, every index the chain has seen
used is below it.

The guard on-chain is a bit per index, and a payment is bound to its index in
PostgreSQL. A database restored from an older backup forgets the bindings made since:
left alone, it would give an index used on-chain to another payment (which the
Distributor then skips as already paid) and give a payment paid since the backup a
second, fresh index (which pays it twice). So at start-up, each Distributor's logs are
scanned from the last block the database remembers scanning: the floor is raised past
every index found, and each payout found is remembered, so that its payment is confirmed
by the transaction that paid it instead of being batched again.

A restored database may also not know transactions its keys still have in the node's
pool (the pending nonce is above the one it reserved): their payouts are not in the logs
yet. The scan waits for them to be mined first, and refuses to start past
``index_rebuild_wait_s`` rather than guess.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from tokendist.consumer import contracts
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.ports import BatchStore
from tokendist.consumer.repository import ScannedPayout
from tokendist.core.errors import SettingsError
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.indices")

# Blocks per eth_getLogs request: public nodes cap a range (often at 10,000).
SCAN_CHUNK = 5_000


async def rebuild(settings: ConsumerSettings, repo: BatchStore, keys: KeyPool) -> None:
    """Wait for unknown pending transactions, synchronise each key's nonce with the chain,
    then raise every Distributor's index floor from its logs."""
    node = keys.node
    chain_id = await node.chain_id()
    for sender in keys.keys:
        await _await_unknown(settings, repo, keys, chain_id, sender)
        pending = await node.nonce_of(sender, pending=True)
        next_nonce = await repo.sync_nonce(chain_id, sender, pending)
        log.info("nonce_synchronised", sender=sender, chain_pending=pending, next_nonce=next_nonce)
    head = await node.block_number()
    for distributor in await repo.distributors(chain_id):
        floor, scanned = await repo.index_scan(distributor)
        found = 0
        for start in range(scanned + 1, head + 1, SCAN_CHUNK):
            end = min(start + SCAN_CHUNK - 1, head)
            payouts = [
                ScannedPayout("0x" + p.payment_id.hex(), p.index, p.tx_hash, p.block_number)
                for p in contracts.paid(await node.distributed_logs(distributor, start, end))
            ]
            floor = max([floor, *(p.index + 1 for p in payouts)])
            await repo.record_scan(distributor, payouts, floor, end)
            found += len(payouts)
        log.info("index_floor_rebuilt", distributor=distributor, next_index=floor, payouts=found)


async def _await_unknown(
    settings: ConsumerSettings, repo: BatchStore, keys: KeyPool, chain_id: int, sender: str
) -> None:
    node = keys.node
    pending = await node.nonce_of(sender, pending=True)
    if pending <= await repo.next_nonce(chain_id, sender):
        return
    deadline = time.monotonic() + settings.index_rebuild_wait_s
    log.warning("unknown_transactions_pending", sender=sender, pending_nonce=pending)
    while await node.nonce_of(sender, pending=False) < pending:
        if time.monotonic() > deadline:
            raise SettingsError(
                f"key {sender} has transactions this database does not know still pending "
                f"after {settings.index_rebuild_wait_s:.0f} s (a restored database?): "
                "wait for them to be mined, or raise TOKENDIST_INDEX_REBUILD_WAIT_S"
            )
        await asyncio.sleep(settings.receipt_poll_s)
