"""``tokendist keys``: the operator keys of a chain (the pool every consumer signs from).

A key is an operator of every Distributor recorded on its chain or of none: ``add``
grants it the role on each (the deployer key is their admin) before it turns ``active``
in ``operator_keys``, so no member signs with a key the contracts would refuse.
``remove`` turns it ``draining`` first (members sign no new batch with it), waits until
its signed and submitted batches have settled, then revokes the role on each Distributor
and marks it ``removed``: revoking earlier would revert its unmined batches. Both are
idempotent: a role already held (or already gone) costs no transaction, and a removal
that ran out of time finishes when run again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from web3 import AsyncHTTPProvider, AsyncWeb3

from tokendist.consumer import contracts
from tokendist.consumer.chain import guarded
from tokendist.core.errors import InvalidInput
from tokendist.ops.deploy import Deployer
from tokendist.ops.repository import ToolRepository

# How often a removal looks again for the key's batches to settle (about a few blocks).
DRAIN_POLL_S = 1.0


class Node:
    """What the tools read from the node about any account, with no key of their own;
    errors mapped by ``consumer.chain.guarded``."""

    def __init__(self, w3: AsyncWeb3[AsyncHTTPProvider]) -> None:
        self.w3 = w3

    @classmethod
    def connect(cls, rpc_url: str) -> Node:
        return cls(AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 30})))

    async def chain_id(self) -> int:
        return await guarded(lambda: self.w3.eth.chain_id)

    async def balance(self, address: str) -> int:
        """``address``'s ETH in wei: what pays its transactions' gas."""
        account = AsyncWeb3.to_checksum_address(address)
        return await guarded(lambda: self.w3.eth.get_balance(account))

    async def pending_nonce(self, address: str) -> int:
        account = AsyncWeb3.to_checksum_address(address)
        return await guarded(lambda: self.w3.eth.get_transaction_count(account, "pending"))

    async def is_contract(self, address: str) -> bool:
        account = AsyncWeb3.to_checksum_address(address)
        return len(await guarded(lambda: self.w3.eth.get_code(account))) > 0

    async def token_balance(self, token: str, holder: str) -> int:
        contract = self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(token), abi=contracts.abi("PropertyToken")
        )
        balance: int = await guarded(
            lambda: contract.functions.balanceOf(AsyncWeb3.to_checksum_address(holder)).call()
        )
        return balance

    async def close(self) -> None:
        await self.w3.provider.disconnect()


def eth(wei: int) -> str:
    return f"{wei / 10**18:.4f} ETH"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    address: str
    state: str
    inflight: int
    db_nonce: int | None  # the next nonce PostgreSQL will give; None: never synchronised
    node_nonce: int  # the node's pending transaction count
    gas_wei: int

    def line(self) -> str:
        db_nonce = "-" if self.db_nonce is None else str(self.db_nonce)
        return (
            f"{self.address}  {self.state:<8}  {self.inflight} batches in flight  "
            f"next nonce {db_nonce} (node pending {self.node_nonce})  gas {eth(self.gas_wei)}"
        )


async def list_keys(repo: ToolRepository, node: Node) -> list[KeyInfo]:
    """Every key of the node's chain, as PostgreSQL and the node see it."""
    chain_id = await node.chain_id()
    return [
        KeyInfo(
            address=r["address"],
            state=r["state"],
            inflight=int(r["inflight"]),
            db_nonce=r["next_nonce"],
            node_nonce=await node.pending_nonce(r["address"]),
            gas_wei=await node.balance(r["address"]),
        )
        for r in await repo.keys(chain_id)
    ]


async def _distributors(repo: ToolRepository, chain_id: int) -> list[str]:
    return [r["distributor_address"] for r in await repo.chain_distributors(chain_id)]


async def add_key(deployer: Deployer, repo: ToolRepository, address: str) -> str:
    """Grant ``address`` (checksummed) the operator role on every Distributor of the
    chain, then make it active; returns the line to print. Refused, with nothing sent or
    written, for the deployer itself (one nonce sequence, two owners) or a contract (it
    cannot sign)."""
    address = AsyncWeb3.to_checksum_address(address)
    node = Node(deployer.w3)
    if address == deployer.account.address:
        raise InvalidInput(f"{address} is the deployer key: an operator key must be its own")
    if await node.is_contract(address):
        raise InvalidInput(f"{address} is a contract: an operator key signs transactions")
    chain_id = await deployer.chain_id()
    distributors = await _distributors(repo, chain_id)
    holding = await _holding(deployer, distributors, address)
    missing = [d for d in distributors if d not in holding]
    for distributor in missing:
        await deployer.grant_operator(distributor, address)
    await repo.activate_key(chain_id, address)
    gas = await node.balance(address)
    unfunded = "; send it ETH for gas before it can sign" if gas == 0 else ""
    return (
        f"key {address} active on chain {chain_id}: operator of its {len(distributors)} "
        f"Distributors ({len(missing)} granted now); gas {eth(gas)}{unfunded}"
    )


@dataclass(frozen=True, slots=True)
class Removal:
    address: str
    chain_id: int
    remaining: int  # batches still signed or submitted: nothing revoked while any
    revoked: int = 0
    distributors: int = 0

    def line(self) -> str:
        if self.remaining:
            return (
                f"key {self.address} is draining on chain {self.chain_id} (no new batches): "
                f"{self.remaining} batches still signed or submitted, its role is kept until "
                f"they settle; run `tokendist keys remove {self.address}` again"
            )
        return (
            f"key {self.address} removed on chain {self.chain_id}: operator role revoked on "
            f"{self.revoked} of its {self.distributors} Distributors (the rest had none)"
        )


async def remove_key(
    deployer: Deployer, repo: ToolRepository, address: str, *, wait_s: float
) -> Removal:
    """Drain ``address``, wait up to ``wait_s`` for its batches to settle, then revoke
    its role everywhere and mark it removed. Refused, with nothing written, for an
    address that is neither a known key nor an operator of any Distributor."""
    address = AsyncWeb3.to_checksum_address(address)
    chain_id = await deployer.chain_id()
    if await repo.key_state(chain_id, address) is None and not await _holding(
        deployer, await _distributors(repo, chain_id), address
    ):
        raise InvalidInput(f"{address} is not an operator key on chain {chain_id}")
    await repo.drain_key(chain_id, address)
    remaining = await _settled(repo, chain_id, address, wait_s)
    if remaining:
        return Removal(address, chain_id, remaining)
    # Read again after the wait: a Distributor may have been deployed meanwhile.
    distributors = await _distributors(repo, chain_id)
    holding = await _holding(deployer, distributors, address)
    for distributor in holding:
        await deployer.revoke_operator(distributor, address)
    await repo.mark_key_removed(chain_id, address)
    return Removal(address, chain_id, 0, len(holding), len(distributors))


async def _holding(deployer: Deployer, distributors: list[str], address: str) -> list[str]:
    """The Distributors on which ``address`` holds the operator role now."""
    return [d for d in distributors if address in await deployer.operators(d)]


async def _settled(repo: ToolRepository, chain_id: int, address: str, wait_s: float) -> int:
    """The key's batches still in flight once none is, or once ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while (inflight := await repo.key_inflight(chain_id, address)) > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(DRAIN_POLL_S, left))
    return inflight
