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

Only payouts in final blocks are remembered: a reorganisation may still remove the
others, and a payment confirmed from a payout that then vanished would never be paid.
Indices seen in blocks not yet final raise the floor all the same (skipping an index
costs nothing). A payout not final yet that no stored transaction of ours explains
(another member's, lost with the backup) is waited for until it is final, or gone:
batching its payment again meanwhile would pay it twice.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from tokendist.consumer import contracts
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.ports import BatchStore, ChainClient
from tokendist.consumer.repository import ScannedPayout
from tokendist.core.errors import SettingsError
from tokendist.core.finality import newest_final
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
    for distributor in await repo.distributors(chain_id):
        await _scan(settings, repo, node, distributor)


async def _scan(
    settings: ConsumerSettings, repo: BatchStore, node: ChainClient, distributor: str
) -> None:
    rule = settings.finality_rule
    waited = False
    while True:
        head = await node.block_number()
        tagged = await node.tagged_block(rule.tag) if rule.tag is not None else None
        final = min(newest_final(rule, head, tagged), head)
        floor, scanned = await repo.index_scan(distributor)
        found = 0
        for start in range(scanned + 1, final + 1, SCAN_CHUNK):
            end = min(start + SCAN_CHUNK - 1, final)
            payouts = await _payouts(node, distributor, start, end)
            floor = max([floor, *(p.index + 1 for p in payouts)])
            await repo.record_scan(distributor, payouts, floor, end)
            found += len(payouts)
        unfinal = await _payouts(node, distributor, max(scanned, final) + 1, head)
        if unfinal:
            floor = max([floor, *(p.index + 1 for p in unfinal)])
            await repo.record_scan(distributor, [], floor, max(scanned, final))
        known = await repo.known_transactions(sorted({p.tx_hash for p in unfinal}))
        unknown = [p for p in unfinal if p.tx_hash not in known]
        if not unknown:
            if waited:
                log.info("unknown_payouts_settled", distributor=distributor)
            log.info(
                "index_floor_rebuilt",
                distributor=distributor,
                next_index=floor,
                payouts=found,
                not_final=len(unfinal),
            )
            return
        if not waited:
            waited = True
            log.warning(
                "unknown_payouts_not_final",
                distributor=distributor,
                payouts=len(unknown),
                newest_block=max(p.block_number for p in unknown),
                finality=str(rule),
            )
        await asyncio.sleep(settings.receipt_poll_s)


async def _payouts(
    node: ChainClient, distributor: str, start: int, end: int
) -> list[ScannedPayout]:
    if start > end:
        return []
    return [
        ScannedPayout("0x" + p.payment_id.hex(), p.index, p.tx_hash, p.block_number)
        for p in contracts.paid(await node.distributed_logs(distributor, start, end))
    ]


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
