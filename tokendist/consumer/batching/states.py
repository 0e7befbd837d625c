"""The batch lifecycle.

signed ──► submitted ──► confirmed ──► credited
   │           │            (each payment's outcome read from the receipt's logs;
   │           │             one DB transaction credits them all)
   ├───────────┴──► reverted   (mined, status 0: nothing paid, every bit rolled back;
   │                            its payments fail retryable)
   └───────────────► abandoned (its nonce went to a transaction we did not sign, so
                                its bytes can never be mined: its payments are batched
                                again under fresh indices)
"""

from __future__ import annotations

import enum


class BatchState(enum.StrEnum):
    SIGNED = "signed"
    SUBMITTED = "submitted"
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
        """Its transaction may still be mined."""
        return self in (BatchState.SIGNED, BatchState.SUBMITTED)


BATCH_TRANSITIONS: dict[BatchState, frozenset[BatchState]] = {
    BatchState.SIGNED: frozenset(
        {BatchState.SUBMITTED, BatchState.CONFIRMED, BatchState.REVERTED, BatchState.ABANDONED}
    ),
    BatchState.SUBMITTED: frozenset(
        {BatchState.CONFIRMED, BatchState.REVERTED, BatchState.ABANDONED}
    ),
    BatchState.CONFIRMED: frozenset({BatchState.CREDITED}),
    BatchState.CREDITED: frozenset(),
    BatchState.REVERTED: frozenset(),
    BatchState.ABANDONED: frozenset(),
}


def sources(new: BatchState) -> list[str]:
    """The states a batch may move to ``new`` from (the guard of the UPDATE)."""
    return [s.value for s, targets in BATCH_TRANSITIONS.items() if new in targets]
