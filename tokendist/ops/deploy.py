"""``tokendist chain deploy``: the property token and its Distributor, funded, recorded.

The deployer key is the Distributor's admin (it alone grants and revokes operators); the
operator keys only distribute. Keeping them apart means the operators' nonces are managed
by the consumers alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ContractLogicError, Web3RPCError

from tokendist.consumer import contracts
from tokendist.consumer.chain import guarded
from tokendist.core import db
from tokendist.core.errors import (
    ChainRejected,
    ChainUnavailable,
    DatabaseUnavailable,
    InvalidInput,
)
from tokendist.ops.repository import ToolRepository

RECEIPT_TIMEOUT_S = 60

FEE_BELOW_BASE_FEE = "max fee per gas less than block base fee"


@dataclass(frozen=True, slots=True)
class Deployment:
    tokenization_id: str
    property_id: str
    chain_id: int
    token_address: str
    distributor_address: str
    decimals: int
    supply: int
    standard: str = "erc20"  # or "erc3643" (a T-REX suite: ``ops.trex``)


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
        try:
            tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            # The fee was filled in when the call was built; a base fee that rose since
            # refuses it (geth's ErrFeeCapTooLow, anvil the same): built again, it passes.
            if FEE_BELOW_BASE_FEE in str(exc):
                raise ChainUnavailable(f"the base fee rose past this transaction's: {exc}") from exc
            raise
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
        self,
        *,
        operator: str | Sequence[str],
        name: str,
        symbol: str,
        decimals: int,
        supply: int,
        fund: int,
    ) -> tuple[str, str]:
        """Deploy token and Distributor (admin: the deployer; ``operator``, one key or
        several, granted the operator role); ``fund`` of the ``supply`` (minted to the
        deployer, the treasury) moves into the Distributor, the rest stays for later
        top-ups."""
        token = await self._deploy(
            "PropertyToken", name, symbol, decimals, supply, self.account.address
        )
        distributor = await self._deploy(
            "Distributor",
            token,
            self.account.address,
            [
                AsyncWeb3.to_checksum_address(o)
                for o in ([operator] if isinstance(operator, str) else operator)
            ],
        )
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

    def _distributor(self, distributor: str) -> AsyncContract:
        return self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(distributor), abi=contracts.abi("Distributor")
        )

    async def operators(self, distributor: str) -> list[str]:
        """The keys holding the operator role now (checksummed)."""
        contract = self._distributor(distributor)
        members: list[str] = await guarded(
            lambda: contract.functions.getRoleMembers(contracts.OPERATOR_ROLE).call()
        )
        return [AsyncWeb3.to_checksum_address(m) for m in members]

    async def _role(self, function: str, distributor: str, address: str) -> None:
        contract = self._distributor(distributor)
        call = contract.functions[function](
            contracts.OPERATOR_ROLE, AsyncWeb3.to_checksum_address(address)
        )
        try:
            tx = await guarded(lambda: call.build_transaction({"from": self.account.address}))
        except ContractLogicError as exc:  # estimating it reverted: not the admin, say
            data = str(exc.data or exc.message or "")
            reason = contracts.error_selectors("Distributor").get(data[:10], data)
            raise ChainRejected(f"{function} of {address} on {distributor}: {reason}") from exc
        await self._transact(dict(tx))

    async def grant_operator(self, distributor: str, address: str) -> None:
        """Let ``address`` distribute (admin only; granting a holder again is a no-op)."""
        await self._role("grantRole", distributor, address)

    async def revoke_operator(self, distributor: str, address: str) -> None:
        """Stop ``address`` distributing (admin only; revoking a non-holder is a no-op):
        its batches still unmined revert with ``AccessControlUnauthorizedAccount``."""
        await self._role("revokeRole", distributor, address)

    async def set_operator(self, distributor: str, operator: str) -> None:
        """Rotation onto one key: grant ``operator`` first (never a moment without an
        operator), then revoke every other operator."""
        await self.grant_operator(distributor, operator)
        keep = AsyncWeb3.to_checksum_address(operator)
        for other in await self.operators(distributor):
            if other != keep:
                await self.revoke_operator(distributor, other)

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


async def check_deployable(
    ops: ToolRepository, tokenization_id: str, supply: int, fund: int | None
) -> None:
    """Everything that can be refused, checked before the first transaction: amounts, and
    an id that is already recorded."""
    if (problem := amounts_problem(supply, fund)) is not None:
        raise InvalidInput(problem)
    if await ops.distributor_of(tokenization_id) is not None:
        # ChainRejected, and this text: the compose setup script recognises a re-run by them.
        raise ChainRejected(f"tokenization {tokenization_id} is already deployed")


async def record_deployment(
    ops: ToolRepository, deployment: Deployment, suite: Mapping[str, str | int] | None = None
) -> None:
    """Record a deployed tokenization (with its ERC-3643 ``suite`` row, if one, in the same
    transaction); the contracts exist by now, so a failure names them for whoever records
    them by hand."""
    d = deployment
    unrecorded = (
        f"deployed token {d.token_address} and distributor {d.distributor_address} but did "
        f"not record tokenization {d.tokenization_id}"
    )
    try:
        recorded = await ops.record_tokenization(
            tokenization_id=d.tokenization_id,
            property_id=d.property_id,
            chain_id=d.chain_id,
            token_address=d.token_address,
            decimals=d.decimals,
            distributor_address=d.distributor_address,
            suite=suite,
        )
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"{unrecorded}: {exc}") from exc
    if not recorded:
        raise InvalidInput(f"{unrecorded}: another deploy recorded it first")


async def deploy_tokenization(
    deployer: Deployer,
    conn: db.Connection,
    *,
    tokenization_id: str,
    property_id: str,
    operator: str | Sequence[str],
    name: str,
    symbol: str,
    decimals: int,
    supply: int,
    fund: int | None = None,
) -> Deployment:
    """Deploy, fund and record one tokenization (the plain ERC-20; ``ops.trex`` deploys
    ERC-3643 ones); ``operator``: the key (or keys) granted the operator role."""
    ops = ToolRepository(conn)
    await check_deployable(ops, tokenization_id, supply, fund)
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
    await record_deployment(ops, deployment)
    return deployment
