"""The batch lifecycle.

signed ──► submitted ──► mined ──► confirmed ──► credited
   │           ▲  │        │ │      (final by the finality rule: each payment's outcome
   │           │  │        │ │       read from the receipt's logs; one DB transaction
   │           │  │        │ │       credits them all)
   │           └──┼────────┘ │  reorganised before final: its block is no longer canonical
   │              │          │  (or its receipt is gone); the same bytes are broadcast again
   │              │          └► mined again, at the block that now holds it
   ├──────────────┴──────────┴► reverted  (status 0, and final: nothing paid, every bit
   │                                       rolled back; its payments fail retryable)
   └───────────────────────────► abandoned (its nonce went to a transaction we did not
                                            sign, so its bytes can never be mined: its
                                            payments are batched again, fresh indices)

A receipt whose finality is reached at first sight (``confirmations:1``) goes from
submitted to confirmed or reverted at once; only a mined batch is re-checked for
reorganisations (``mined, not final`` in ``tokendist status``).
"""

from __future__ import annotations

import enum


class BatchState(enum.StrEnum):
    SIGNED = "signed"
    SUBMITTED = "submitted"
    MINED = "mined"
    CONFIRMED = "confirmed"
    CREDITED = "credited"
    REVERTED = "reverted"
    ABANDONED = "abandoned"

    @property
    def settled(self) -> bool:
        """Nothing more will happen to the batch."""
        return self in (BatchState.CREDITED, BatchState.REVERTED, BatchState.ABANDONED)

    @property
    def in_flight(self) -> bool:
        """Its transaction is not in a block yet: it may be re-broadcast and fee-bumped."""
        return self in (BatchState.SIGNED, BatchState.SUBMITTED)


BATCH_TRANSITIONS: dict[BatchState, frozenset[BatchState]] = {
    BatchState.SIGNED: frozenset(
        {
            BatchState.SUBMITTED,
            BatchState.MINED,
            BatchState.CONFIRMED,
            BatchState.REVERTED,
            BatchState.ABANDONED,
        }
    ),
    BatchState.SUBMITTED: frozenset(
        {BatchState.MINED, BatchState.CONFIRMED, BatchState.REVERTED, BatchState.ABANDONED}
    ),
    # mined -> mined: a reorganisation put the transaction in another block.
    BatchState.MINED: frozenset(
        {BatchState.MINED, BatchState.SUBMITTED, BatchState.CONFIRMED, BatchState.REVERTED}
    ),
    BatchState.CONFIRMED: frozenset({BatchState.CREDITED}),
    BatchState.CREDITED: frozenset(),
    BatchState.REVERTED: frozenset(),
    BatchState.ABANDONED: frozenset(),
}


def sources(new: BatchState) -> list[str]:
    """The states a batch may move to ``new`` from (the guard of the UPDATE)."""
    return [s.value for s, targets in BATCH_TRANSITIONS.items() if new in targets]
