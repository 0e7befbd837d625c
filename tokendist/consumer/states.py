"""The distribution lifecycle, one row per payment event.

received ──► awaiting_kyc ──► (approval re-drives the event) ─┐
    │                                                        │
    └──────────────► signed ◄────────────────────────────────┘
                       │  raw transaction, hash and nonce stored before broadcast
                       ▼
                   submitted ──► confirmed ──► credited
                       │             (holdings += tokens, ledger pair, investment
                       ▼              distributed: one DB transaction)
                     failed (with a reason: reverted, refused before signing, ...)
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    RECEIVED = "received"
    AWAITING_KYC = "awaiting_kyc"
    SIGNED = "signed"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    CREDITED = "credited"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (State.CREDITED, State.FAILED)

    @property
    def before_signing(self) -> bool:
        return self in (State.RECEIVED, State.AWAITING_KYC)

    @property
    def on_chain(self) -> bool:
        """A signed transaction exists: from here on the event can never be re-signed."""
        return self in (State.SIGNED, State.SUBMITTED)


TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.AWAITING_KYC, State.SIGNED, State.FAILED}),
    State.AWAITING_KYC: frozenset({State.SIGNED, State.FAILED}),
    # Never to failed: the nonce is spent in our books, and failing a transaction that was
    # never broadcast would leave a gap that blocks every later one. Only a submitted one
    # fails (a revert, or its nonce consumed by another transaction).
    State.SIGNED: frozenset({State.SUBMITTED, State.CONFIRMED}),
    State.SUBMITTED: frozenset({State.CONFIRMED, State.FAILED}),
    State.CONFIRMED: frozenset({State.CREDITED}),
    State.CREDITED: frozenset(),
    State.FAILED: frozenset({State.RECEIVED}),  # an operator's re-drive, only if never signed
}


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise ValueError(f"illegal transition {current} -> {new}")
