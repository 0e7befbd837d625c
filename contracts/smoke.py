"""Smoke test of the compiled contracts against a running dev chain (anvil).

    python contracts/smoke.py [RPC_URL]      (default: $ETH_RPC_URL or
                                              http://127.0.0.1:58545)

Deploys PropertyToken and Distributor from contracts/build/*.json with anvil's
first dev key, funds the distributor, distributes once, and checks that a
repeated paymentId, a non-operator caller, zero inputs and a non-owner
setOperator all revert with the expected custom errors. Exits non-zero on the
first failed check. Each run deploys fresh contracts, so it can be repeated.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

BUILD = Path(__file__).resolve().parent / "build"
# Anvil / Hardhat dev account #0: public, well-known, for local chains only.
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ZERO_ADDRESS = "0x" + "00" * 20
UNIT = 10**18


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"FAIL: {what}")
    say(f"ok   {what}")


def selector(signature: str) -> str:
    return "0x" + Web3.keccak(text=signature)[:4].hex().removeprefix("0x")


def payment_id(label: str) -> bytes:
    return bytes(Web3.keccak(text=label))


class Chain:
    def __init__(self, url: str, key: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
        if not self.w3.is_connected():
            raise SystemExit(f"no JSON-RPC node at {url}")
        self.acct: LocalAccount = Account.from_key(key)

    @property
    def me(self) -> str:
        return str(self.acct.address)

    def send(self, fn: ContractFunction | ContractConstructor) -> TxReceipt:
        """Sign and send a contract call or constructor; return the receipt."""
        nonce = self.w3.eth.get_transaction_count(self.acct.address)
        tx = fn.build_transaction({"from": self.acct.address, "nonce": nonce})
        signed = self.acct.sign_transaction(tx)  # type: ignore[arg-type]
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        if receipt["status"] != 1:
            raise SystemExit(f"FAIL: transaction {tx_hash.hex()} reverted")
        return receipt

    def deploy(self, name: str, *args: Any) -> Contract:
        art = json.loads((BUILD / f"{name}.json").read_text())
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.send(factory.constructor(*args))
        address = receipt["contractAddress"]
        return cast(Contract, self.w3.eth.contract(address=address, abi=art["abi"]))


def expect_revert(call: ContractFunction, sender: str, signature: str, what: str) -> None:
    """eth_call `call` from `sender`; require revert data that starts with the error's selector."""
    want = selector(signature)
    try:
        call.call({"from": sender})
    except ContractCustomError as exc:
        data = str(exc.data)
        check(
            data.lower().startswith(want), f"{what}: reverts {signature} {want} (got {data[:10]})"
        )
        return
    raise SystemExit(f"FAIL: {what} did not revert")


def deploy_and_fund(chain: Chain) -> tuple[Contract, Contract]:
    me = chain.me
    supply = 1_000_000 * UNIT
    token = chain.deploy("PropertyToken", "Property Token", "PROP", 18, supply, me)
    dist = chain.deploy("Distributor", token.address, me)
    check(token.functions.balanceOf(me).call() == supply, "initial supply minted to holder")
    check(token.functions.decimals().call() == 18, "decimals() == 18")
    check(dist.functions.token().call() == token.address, "Distributor.token()")
    check(dist.functions.operator().call() == me, "Distributor.operator()")
    check(dist.functions.owner().call() == me, "Distributor.owner()")
    chain.send(token.functions.transfer(dist.address, 1_000 * UNIT))
    check(token.functions.balanceOf(dist.address).call() == 1_000 * UNIT, "distributor funded")
    return token, dist


def distribute_once(chain: Chain, token: Contract, dist: Contract, investor: str) -> None:
    pid, amount = payment_id("payment-0001"), 250 * UNIT
    before = token.functions.balanceOf(dist.address).call()
    check(not dist.functions.distributed(pid).call(), "distributed(pid) is false before")
    receipt = chain.send(dist.functions.distribute(pid, investor, amount))

    (ev,) = dist.events.Distributed().process_receipt(receipt, errors=DISCARD)
    check(
        (ev.args.paymentId, ev.args.to, ev.args.amount) == (pid, investor, amount),
        "one Distributed(paymentId, to, amount) log",
    )
    (tr,) = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    check(
        (tr.args["from"], tr.args.to, tr.args.value) == (dist.address, investor, amount),
        "one Transfer(distributor -> investor, amount) log",
    )
    check(token.functions.balanceOf(investor).call() == amount, "investor balance == amount")
    check(
        token.functions.balanceOf(dist.address).call() == before - amount,
        "distributor balance reduced by amount",
    )
    check(dist.functions.distributed(pid).call(), "distributed(pid) is true after")

    expect_revert(
        dist.functions.distribute(pid, investor, amount),
        chain.me,
        "AlreadyDistributed(bytes32)",
        "same paymentId again",
    )


def rejected_calls(chain: Chain, dist: Contract, investor: str) -> None:
    me, stranger = chain.me, str(Account.create().address)
    distribute = dist.functions.distribute
    expect_revert(
        distribute(payment_id("p2"), investor, 1), stranger, "NotOperator()", "non-operator"
    )
    expect_revert(distribute(payment_id("p3"), ZERO_ADDRESS, 1), me, "ZeroAddress()", "to = 0x0")
    expect_revert(distribute(payment_id("p4"), investor, 0), me, "ZeroAmount()", "amount = 0")
    expect_revert(
        distribute(payment_id("p5"), investor, 10**9 * UNIT),
        me,
        "TokenTransferFailed()",
        "more than the distributor holds",
    )
    expect_revert(
        dist.functions.setOperator(stranger), stranger, "NotOwner()", "setOperator by non-owner"
    )

    receipt = chain.send(dist.functions.setOperator(stranger))
    (ev,) = dist.events.OperatorChanged().process_receipt(receipt, errors=DISCARD)
    check(
        (ev.args.previous, ev.args.current) == (me, stranger),
        "setOperator emits OperatorChanged(previous, current)",
    )
    expect_revert(
        distribute(payment_id("p6"), investor, 1),
        me,
        "NotOperator()",
        "old operator after rotation",
    )


def main() -> int:
    url = (sys.argv[1:] or [os.environ.get("ETH_RPC_URL", "http://127.0.0.1:58545")])[0]
    chain = Chain(url, DEV_KEY)
    say(f"chain id {chain.w3.eth.chain_id} at {url}, deployer/operator {chain.me}")
    token, dist = deploy_and_fund(chain)
    investor = str(Account.create().address)
    distribute_once(chain, token, dist, investor)
    rejected_calls(chain, dist, investor)
    say("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
