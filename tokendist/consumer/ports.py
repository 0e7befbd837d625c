"""What the distribution state machine (``Processor``, ``Resubmitter``) needs from the
world, as small Protocols. The composition root (``consumer.wiring``) plugs in the real
adapters: ``Repository`` (PostgreSQL), ``Chain`` (one node, one key of the pool), ``DeadLetters``
(the DLQ topic and PostgreSQL). Unit tests plug in in-memory fakes of their own.

Every port raises only errors of our tree (``tokendist.core.errors``), mapped inside its
adapter. A ``TransientError`` means "the same call may succeed later": the state machine
lets it propagate, and the partition worker retries the record.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from eth_typing import HexStr

from tokendist.consumer.chain import Block, Receipt, SendResult, Signed
from tokendist.consumer.repository import (
    Batch,
    BatchOutcome,
    BatchRequest,
    Confirmation,
    Distribution,
    ScannedPayout,
    SignBatch,
    SignedBatch,
    StoredTx,
    Tokenization,
    User,
)
from tokendist.consumer.states import State
from tokendist.core.finality import Tag


class DistributionStore(Protocol):
    """The distributions, their transactions and the sender's nonces, durably.

    Promises: each method is atomic; every state change is guarded by the state the
    caller read and raises ``StateConflict`` when the stored state differs (another
    worker moved the row: reload with ``get``); a state change outside
    ``consumer.states.TRANSITIONS`` is never made. Raises ``DatabaseUnavailable`` when
    the store cannot be reached.
    """

    async def confirmation(self, event_id: uuid.UUID) -> Confirmation | None:
        """The confirmed payment written with the event's id, if any."""
        ...

    async def tokenization(self, tokenization_id: str) -> Tokenization | None: ...

    async def claim(
        self,
        *,
        event_id: uuid.UUID,
        investment_id: str,
        payment_id: str,
        user_id: str,
        tokenization_id: str,
        tokens: int,
        payload: str,
        partition: int,
        offset: int,
    ) -> tuple[Distribution | None, Distribution | None]:
        """Insert a ``received`` row unless the event or the investment has one; returns
        (the row of this event id, the row of this investment id)."""
        ...

    async def get(self, event_id: uuid.UUID) -> Distribution: ...

    async def transition(
        self, dist: Distribution, new: State, reason: str | None = None, *, retryable: bool = False
    ) -> Distribution:
        """``dist`` moved to ``new``; ``retryable`` marks a failure that paid nothing."""
        ...

    async def payable_user_or_park(self, dist: Distribution) -> tuple[User | None, Distribution]:
        """The user if KYC-approved with a wallet; else ``dist`` parked (``awaiting_kyc``),
        atomically with respect to an approval."""
        ...

    async def credit(self, event_ids: list[uuid.UUID], batch: Batch | None = None) -> int:
        """Holdings += tokens, the ledger pair, the investment distributed and the state
        credited for each of ``event_ids`` still ``confirmed`` (and ``batch`` credited),
        at once; returns how many this call credited."""
        ...


class SigningKey(Protocol):
    """One key of the pool, in whatever custody (``tokendist.custody``). A remote custody
    may raise ``SignerUnavailable`` (sign again later) or ``KeyRejected`` (rest the key).
    ``ChainClient.chain_id`` must have been awaited first (the id is part of what is
    signed)."""

    @property
    def sender(self) -> str: ...

    async def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed: ...


class ChainClient(Protocol):
    """One node, asked about the sender's account and the Distributor. Every call may
    raise ``ChainUnavailable``; ``estimate`` and ``send_raw`` also ``ChainRejected``,
    a refusal that asking again cannot change (the answers table of ``consumer.chain``)."""

    async def chain_id(self) -> int: ...

    async def nonce(self, *, pending: bool) -> int:
        """The sender's transaction count, as of the pending or the latest block."""
        ...

    async def nonce_of(self, address: str, *, pending: bool) -> int:
        """Any account's transaction count, as of the pending or the latest block."""
        ...

    async def latest(self) -> Block: ...

    async def tagged_block(self, tag: Tag) -> int | None:
        """The number of the node's block of ``tag``; None while it has none."""
        ...

    async def block_hash(self, number: int) -> str | None:
        """The hash of the canonical block ``number``; None above the head."""
        ...

    async def base_fee(self) -> int: ...

    async def gas_balance(self) -> int:
        """The sender's ETH, in wei."""
        ...

    async def estimate(self, to: str, data: HexStr) -> int:
        """Gas for the call; ``ChainRejected`` if it would revert."""
        ...

    async def send_raw(self, raw: bytes) -> SendResult:
        """Broadcast; a ``SendResult`` also when the node has (had) this nonce's
        transaction. ``ChainRejected`` on any other refusal."""
        ...

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        """Each transaction's receipt (with its logs), None while not mined."""
        ...

    async def block_number(self) -> int: ...

    async def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` at the latest block; ``ChainRejected`` if it reverts."""
        ...

    async def distributed_logs(
        self, distributor: str, from_block: int = 0, to_block: int | None = None
    ) -> list[dict[str, Any]]:
        """The Distributor's ``Distributed`` logs in these blocks (None: up to the head)."""
        ...

    async def payment_logs(self, distributor: str, payment_id: str) -> list[dict[str, Any]]:
        """The ``Distributed`` logs that paid ``payment_id`` (0x-hex), ever."""
        ...


class OperatorChain(ChainClient, SigningKey, Protocol):
    """A node and one operator key of the pool, as ``consumer.chain.Chain`` is."""


class KeyBook(Protocol):
    """Which keys may sign, and how many batches each has unconfirmed (PostgreSQL, shared
    by every member)."""

    async def register_keys(self, chain_id: int, addresses: list[str]) -> None: ...

    async def key_states(self, chain_id: int) -> dict[str, str]: ...

    async def inflight_batches(self, chain_id: int) -> dict[str, int]: ...


class BatchStore(DistributionStore, KeyBook, Protocol):
    """The batches, their attempts, the keys' nonces and the index floor, durably. Same
    promises as ``DistributionStore``: each method atomic, each batch state change
    guarded (``StateConflict``) and within ``batching.states.BATCH_TRANSITIONS``."""

    async def sign_batch(self, request: BatchRequest, sign: SignBatch) -> SignedBatch:
        """Take those of the request's payments still before signing, confirm those the
        index scan found paid, give the rest a contiguous range of indices and the key's
        next nonce, ``sign``, and store batch, attempt and members: all or nothing."""
        ...

    async def batch(self, batch_id: int) -> Batch: ...

    async def batch_members(self, batch_id: int) -> list[Distribution]: ...

    async def attempts(self, batch_id: int) -> list[StoredTx]:
        """The batch's signed attempts (one nonce), oldest first."""
        ...

    async def mark_broadcast(self, tx_hash: str) -> None: ...

    async def batch_submitted(self, batch: Batch) -> Batch: ...

    async def batch_mined(self, batch: Batch, receipt: Receipt) -> Batch:
        """In ``receipt``'s block, not final yet (again, if it was in another block)."""
        ...

    async def batch_reorged(self, batch: Batch) -> Batch:
        """Mined in ``batch.block_hash``, which is no longer canonical: submitted again."""
        ...

    async def batch_confirmed(
        self, batch: Batch, tx_hash: str, block_number: int, outcome: BatchOutcome
    ) -> Batch: ...

    async def batch_reverted(self, batch: Batch, tx_hash: str, block_number: int) -> Batch: ...

    async def batch_abandoned(self, batch: Batch, reason: str) -> Batch: ...

    async def pending_batches(self, chain_id: int, sender: str) -> list[dict[str, Any]]:
        """The newest attempt of every unconfirmed batch of ``sender``, by nonce."""
        ...

    async def store_attempt(self, batch_id: int, replaces: str, signed: Signed) -> bool:
        """A fee-bumped sibling of ``replaces`` stored, unless the batch is no longer in
        flight or ``replaces`` is no longer its newest attempt (False: nothing stored)."""
        ...

    async def sync_nonce(self, chain_id: int, sender: str, chain_pending: int) -> int: ...

    async def erc3643_token(self, distributor: str) -> str | None:
        """The token of ``distributor``'s tokenization if it is an ERC-3643 (T-REX) one."""
        ...

    async def park(self, dist: Distribution, reason: str, detail: str) -> Distribution:
        """``dist`` (before signing) parked with the pre-flight's ``reason``, or its reason
        updated when parked already; ``StateConflict`` if it moved on meanwhile."""
        ...

    async def next_nonce(self, chain_id: int, sender: str) -> int: ...

    async def distributors(self, chain_id: int) -> list[str]: ...

    async def index_scan(self, distributor: str) -> tuple[int, int]:
        """(next index, last block scanned) of ``distributor``."""
        ...

    async def record_scan(
        self, distributor: str, payouts: list[ScannedPayout], floor: int, scanned_block: int
    ) -> None: ...

    async def known_transactions(self, tx_hashes: list[str]) -> set[str]:
        """Those of ``tx_hashes`` that are attempts of a stored batch."""
        ...


class DeadLetterSink(Protocol):
    """Where a record that can never be processed goes. ``park`` returns once the parking
    is durable; ``DatabaseUnavailable`` or ``BrokerUnavailable`` when it cannot be."""

    async def park(self, record: Any, reason: str, detail: str) -> None: ...
