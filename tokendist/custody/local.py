"""A key held in this process's memory: a raw hex key (development) or a decrypted
keystore."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from pydantic import SecretStr

from tokendist.core.errors import SettingsError
from tokendist.custody.signer import SignedTx


class LocalSigner:
    def __init__(self, key: SecretStr | bytes, custody: str = "local") -> None:
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        try:
            self._account: LocalAccount = Account.from_key(secret)
        except (ValueError, TypeError):  # the message may quote the key: not kept
            raise SettingsError(
                f"an operator key ({custody}) is not a private key (64 hex digits)"
            ) from None
        self._custody = custody

    def __repr__(self) -> str:  # never let the key reach a log line
        return f"LocalSigner({self._custody}, {self.address})"

    @property
    def address(self) -> ChecksumAddress:
        return self._account.address

    @property
    def custody(self) -> str:
        return self._custody

    async def sign(self, tx: dict[str, Any]) -> SignedTx:
        signed = self._account.sign_transaction(tx)
        return SignedTx(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex())
