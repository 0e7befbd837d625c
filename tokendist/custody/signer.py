"""The one interface every custody offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from eth_typing import ChecksumAddress


@dataclass(frozen=True, slots=True)
class SignedTx:
    raw: bytes  # what eth_sendRawTransaction takes
    tx_hash: str  # 0x-hex keccak of ``raw``


class Signer(Protocol):
    """One key. ``sign`` takes a typed transaction as web3 spells it (``type``,
    ``chainId``, ``nonce``, fees, ...). A custody that is a remote service raises
    ``SignerUnavailable`` while it cannot be reached (sign again later) and
    ``KeyRejected`` when it refuses this key (disabled, access denied): the pool rests
    the key and signs with another."""

    @property
    def address(self) -> ChecksumAddress: ...

    @property
    def custody(self) -> str:
        """``local``, ``keystore`` or ``kms``: for logs and the benchmark."""
        ...

    async def sign(self, tx: dict[str, Any]) -> SignedTx: ...
