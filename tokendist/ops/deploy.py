"""``tokendist chain deploy``: the property token and its Distributor, funded, recorded.

The deployer key owns the Distributor (it alone may rotate the operator); the operator
key only distributes. Keeping them apart means the operator's nonces are managed by the
consumers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from web3 import AsyncHTTPProvider, AsyncWeb3

from tokendist.consumer import contracts
from tokendist.consumer.chain import guarded
from tokendist.core import db
from tokendist.core.errors import ChainRejected, DatabaseUnavailable, InvalidInput
from tokendist.ops.repository import ToolRepository

RECEIPT_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class Deployment:
    tokenization_id: str
    property_id: str
    chain_id: int
    token_address: str
    distributor_address: str
    decimals: int
    supply: int


class Deployer:
    """The deployer key's own chain adapter: its RPC calls go through ``consumer.chain``'s
    mapping, one transaction at a time."""

    def __init__(self, rpc_url: str, deployer_key: SecretStr) -> None:
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.account: LocalAccount = Account.from_key(deployer_key.get_secret_value())

    async def chain_id(self) -> int:
        return await guarded(lambda: self.w3.eth.chain_id)

    async def _transact(self, tx: dict[str, Any]) -> dict[str, Any]:
        receipt = await guarded(partial(self._submit, tx))
        if receipt["status"] != 1:
            raise ChainRejected(
                f"deployment transaction {receipt['transactionHash'].hex()} reverted"
            )
        return receipt

    async def _submit(self, tx: dict[str, Any]) -> dict[str, Any]:
        """Nonce, chain id, gas, sign, send, wait for the receipt (within ``guarded``)."""
        tx.setdefault("from", self.account.address)
        tx["nonce"] = await self.w3.eth.get_transaction_count(self.account.address, "pending")
        tx["chainId"] = await self.w3.eth.chain_id
        tx["gas"] = await self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        signed = self.account.sign_transaction(tx)
        tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
        return dict(receipt)

    async def _deploy(self, name: str, *args: Any) -> str:
        factory = self.w3.eth.contract(
            abi=contracts.abi(name), bytecode=contracts.artifact(name)["bytecode"]
        )
        tx = await factory.constructor(*args).build_transaction({"from": self.account.address})
        receipt = await self._transact(dict(tx))
        return str(receipt["contractAddress"])

    async def deploy(
        self, *, operator: str, name: str, symbol: str, decimals: int, supply: int, fund: int
    ) -> tuple[str, str]:
        """Deploy token and Distributor; ``fund`` of the ``supply`` (minted to the deployer,
        the treasury) moves into the Distributor, the rest stays for later top-ups."""
        token = await self._deploy(
            "PropertyToken", name, symbol, decimals, supply, self.account.address
        )
        distributor = await self._deploy("Distributor", token, operator)
        await self.fund(token, distributor, fund)
        return token, distributor

    async def fund(self, token: str, distributor: str, amount: int) -> None:
        contract = self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(token), abi=contracts.abi("PropertyToken")
        )
        tx = await contract.functions.transfer(
            AsyncWeb3.to_checksum_address(distributor), amount
        ).build_transaction({"from": self.account.address})
        await self._transact(dict(tx))

    async def set_operator(self, distributor: str, operator: str) -> None:
        """Rotate the Distributor's operator key (only the owner, the deployer, may)."""
        contract = self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(distributor), abi=contracts.abi("Distributor")
        )
        tx = await contract.functions.setOperator(
            AsyncWeb3.to_checksum_address(operator)
        ).build_transaction({"from": self.account.address})
        await self._transact(dict(tx))

    async def close(self) -> None:
        await self.w3.provider.disconnect()


def amounts_problem(supply: int, fund: int | None) -> str | None:
    """Why ``supply`` and ``fund`` cannot be deployed, if they cannot: the fund is moved
    out of the supply, so more than the supply reverts after both contracts exist."""
    if supply <= 0:
        return f"--supply must be positive, not {supply}"
    if fund is not None and not 0 < fund <= supply:
        return f"--fund {fund} must be positive and at most --supply {supply}"
    return None


async def deploy_tokenization(
    deployer: Deployer,
    conn: db.Connection,
    *,
    tokenization_id: str,
    property_id: str,
    operator: str,
    name: str,
    symbol: str,
    decimals: int,
    supply: int,
    fund: int | None = None,
) -> Deployment:
    """Deploy, fund and record one tokenization. Everything that can be refused is checked
    before the first transaction: amounts, and an id that is already recorded."""
    if (problem := amounts_problem(supply, fund)) is not None:
        raise InvalidInput(problem)
    ops = ToolRepository(conn)
    if await ops.distributor_of(tokenization_id) is not None:
        # ChainRejected, and this text: the compose setup script recognises a re-run by them.
        raise ChainRejected(f"tokenization {tokenization_id} is already deployed")
    token, distributor = await deployer.deploy(
        operator=operator,
        name=name,
        symbol=symbol,
        decimals=decimals,
        supply=supply,
        fund=supply if fund is None else fund,
    )
    deployment = Deployment(
        tokenization_id=tokenization_id,
        property_id=property_id,
        chain_id=await deployer.chain_id(),
        token_address=token,
        distributor_address=distributor,
        decimals=decimals,
        supply=supply,
    )
    # The contracts exist now: whoever records them by hand needs their addresses.
    unrecorded = (
        f"deployed token {token} and distributor {distributor} but did not record "
        f"tokenization {tokenization_id}"
    )
    try:
        recorded = await ops.record_tokenization(
            tokenization_id=tokenization_id,
            property_id=property_id,
            chain_id=deployment.chain_id,
            token_address=token,
            decimals=decimals,
            distributor_address=distributor,
        )
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"{unrecorded}: {exc}") from exc
    if not recorded:
        raise InvalidInput(f"{unrecorded}: another deploy recorded it first")
    return deployment
