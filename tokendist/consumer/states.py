"""The distribution lifecycle, one row per payment event.

received ──► awaiting_kyc ──► (approval re-drives the event) ─┐
    │  ▲  ▲         │                                         │
    │  │  └─────────┘ released: the re-check found its        │
    │  │              condition cleared (event re-published)  │
    └──┼───────────► signed ◄────────────────────────────────┘
       │               │  in a batch (``consumer.batching``): its index, the batch's
       │               │  raw transaction, hash and nonce stored before broadcast
       │               ▼
       └──────── submitted ──► confirmed ──► credited
    (its batch abandoned:  │             (holdings += tokens, ledger pair, investment
     the nonce went to     ▼              distributed: one DB transaction per batch)
     another transaction) failed (with a reason: reverted, refused before signing, ...)

awaiting_kyc is "parked before signing": nothing signed, no nonce taken, no gas spent. Its
row's ``parked_reason`` says what must clear (``compliance.RefusalReason``): the investor's
KYC in this database (``awaiting_kyc``, by the processor) or, for an ERC-3643 token, the
pre-flight's refusal (``awaiting_kyc`` for an unverified identity, ``token_paused``,
``wallet_frozen``, ``compliance_refused``, by the gatherer). ``kyc approve`` re-drives a
user's parked events; ``consumer.release`` asks the pre-flight again periodically and
releases each payment it no longer refuses: back to received, its event published again.
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
    # To confirmed directly: found paid on-chain by the index scan (a restored database).
    State.RECEIVED: frozenset({State.AWAITING_KYC, State.SIGNED, State.CONFIRMED, State.FAILED}),
    # Back to received: released by the re-check, its event published again with it.
    State.AWAITING_KYC: frozenset({State.RECEIVED, State.SIGNED, State.CONFIRMED, State.FAILED}),
    # To failed only with its batch's receipt (a revert): failing a transaction that was
    # never mined would leave a nonce gap that blocks every later one. Back to received
    # only once the batch's nonce is provably taken by another transaction, so that its
    # bytes can never be mined: then a fresh index cannot pay the payment twice.
    State.SIGNED: frozenset({State.SUBMITTED, State.CONFIRMED, State.FAILED, State.RECEIVED}),
    State.SUBMITTED: frozenset({State.CONFIRMED, State.FAILED, State.RECEIVED}),
    State.CONFIRMED: frozenset({State.CREDITED}),
    State.CREDITED: frozenset(),
    State.FAILED: frozenset({State.RECEIVED}),  # an operator's re-drive, only if never signed
}


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise ValueError(f"illegal transition {current} -> {new}")
