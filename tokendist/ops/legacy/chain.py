"""What the old system really paid: every ERC-20 ``Transfer`` of a property token out of
an old distributor wallet (an EOA that called ``transfer`` itself), read from the node's
logs. Errors are mapped by ``consumer.chain.guarded`` (an unreachable node is
``ChainUnavailable``); no key is needed, nothing is signed."""

from __future__ import annotations

from typing import Any

from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3RPCError

from tokendist.consumer import contracts
from tokendist.consumer.chain import guarded
from tokendist.core.errors import InvalidInput
from tokendist.ops.legacy.findings import Transfer

# Many public nodes refuse eth_getLogs over wider ranges; anvil and geth accept it.
BLOCKS_PER_QUERY = 10_000


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower().removeprefix("0x")


class TransferReader:
    def __init__(self, rpc_url: str, *, timeout_s: float = 30.0) -> None:
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))

    async def chain_id(self) -> int:
        return await guarded(lambda: self.w3.eth.chain_id)

    async def head(self) -> int:
        return await guarded(lambda: self.w3.eth.block_number)

    async def decimals(self, token: str) -> int:
        """The token's ``decimals()``; an address that is not an ERC-20 is refused."""
        contract = self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(token), abi=contracts.abi("PropertyToken")
        )
        try:
            value: int = await guarded(lambda: contract.functions.decimals().call())
        except (BadFunctionCallOutput, ContractLogicError, Web3RPCError) as exc:
            raise InvalidInput(f"{token} answers no ERC-20 decimals(): {exc}") from None
        return value

    async def transfers(
        self,
        tokenization_id: str,
        token: str,
        senders: list[str],
        from_block: int,
        to_block: int,
    ) -> list[Transfer]:
        """Every Transfer of ``token`` from one of ``senders`` in [from_block, to_block]."""
        found: list[Transfer] = []
        for start in range(from_block, to_block + 1, BLOCKS_PER_QUERY):
            params: Any = {
                "address": AsyncWeb3.to_checksum_address(token),
                "fromBlock": start,
                "toBlock": min(start + BLOCKS_PER_QUERY - 1, to_block),
                "topics": [contracts.TRANSFER_TOPIC, [_topic(s) for s in senders]],
            }
            found += [_transfer(tokenization_id, e) for e in await self._logs(params)]
        return found

    async def _logs(self, params: Any) -> list[Any]:
        return list(await guarded(lambda: self.w3.eth.get_logs(params)))

    async def close(self) -> None:
        await self.w3.provider.disconnect()


def _transfer(tokenization_id: str, entry: Any) -> Transfer:
    return Transfer(
        tokenization_id=tokenization_id,
        tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
        log_index=int(entry["logIndex"]),
        block=int(entry["blockNumber"]),
        sender="0x" + bytes(entry["topics"][1])[-20:].hex(),
        recipient="0x" + bytes(entry["topics"][2])[-20:].hex(),
        amount=int.from_bytes(bytes(entry["data"]), "big"),
    )
