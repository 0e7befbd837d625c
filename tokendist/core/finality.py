"""When a mined transaction is final: the rule (``TOKENDIST_FINALITY``), the presets per
chain (``TOKENDIST_CHAIN_PRESET``) and the one function that decides.

``confirmations:N``  final once N blocks (its own included) are on top of the head;
``finalized``/``safe`` final once the node's block of that tag has reached its block.

Sources of the presets (``../shared/CHAINS.md``): Chainlink's node defaults use the
``finalized`` tag on Ethereum, Arbitrum, Base and Optimism and 500 blocks on Polygon PoS,
whose reorganisations go hundreds of blocks deep; OpenZeppelin Relayer waits 12
confirmations on Ethereum (``confirmations:12``, faster, weaker). anvil reorganises only
when told to: one block, as before finality existed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_CONFIRMATIONS = 10_000


class Tag(enum.StrEnum):
    FINALIZED = "finalized"
    SAFE = "safe"


@dataclass(frozen=True, slots=True)
class FinalityRule:
    """``confirmations`` blocks, or (``tag`` set) the node's block of that tag."""

    confirmations: int = 1
    tag: Tag | None = None

    def __str__(self) -> str:
        return str(self.tag) if self.tag is not None else f"confirmations:{self.confirmations}"

    @classmethod
    def parse(cls, text: str) -> FinalityRule:
        """``confirmations:N`` (1 ≤ N ≤ 10000), ``finalized`` or ``safe``; ValueError
        saying what is accepted otherwise."""
        value = text.strip().lower()
        if value in set(Tag):
            return cls(tag=Tag(value))
        kind, _, count = value.partition(":")
        if kind == "confirmations" and count.isdigit() and 1 <= int(count) <= MAX_CONFIRMATIONS:
            return cls(confirmations=int(count))
        raise ValueError(
            f"{text!r} is not a finality rule: confirmations:N (N from 1 to "
            f"{MAX_CONFIRMATIONS}), finalized or safe"
        )


PRESETS: dict[str, FinalityRule] = {
    "anvil": FinalityRule(confirmations=1),
    "ethereum": FinalityRule(tag=Tag.FINALIZED),
    "polygon": FinalityRule(confirmations=500),
    "arbitrum": FinalityRule(tag=Tag.FINALIZED),
    "base": FinalityRule(tag=Tag.FINALIZED),
    "optimism": FinalityRule(tag=Tag.FINALIZED),
}


def newest_final(rule: FinalityRule, head: int, tagged: int | None) -> int:
    """The newest block that is final with the chain at ``head`` and the node's block of
    ``rule.tag`` at ``tagged`` (None: the node has none yet); -1 when none is."""
    if rule.tag is None:
        return head - rule.confirmations + 1
    return tagged if tagged is not None else -1


def is_final(rule: FinalityRule, block: int, head: int, tagged: int | None) -> bool:
    """Whether a transaction mined in ``block`` is final (see ``newest_final``)."""
    return block <= newest_final(rule, head, tagged)
