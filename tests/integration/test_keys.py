"""``tokendist keys`` as an operator runs it, against PostgreSQL, anvil and the real
Distributor (issue 14, part 3): a key added is an operator of every Distributor of the
chain and active; a key removed drains first, keeps its role while one of its batches is
in flight, then loses it (its estimates revert) and is marked removed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.integration import harness
from tests.integration.test_operator_commands import (
    CLOSED,
    FIXED_ADDRESS,
    one_line_error,
    tokendist,
)
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.core.errors import KeyRejected
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops import queries
from tokendist.ops.deploy import Deployer, Deployment, deploy_tokenization
from tokendist.ops.keys import Node

pytestmark = pytest.mark.integration


async def has_role(settings: Settings, distributor: str, address: str) -> bool:
    w3 = AsyncWeb3(AsyncHTTPProvider(settings.require_chain()[0]))
    try:
        contract = w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(distributor), abi=contracts.abi("Distributor")
        )
        held: bool = await contract.functions.hasRole(
            contracts.OPERATOR_ROLE, AsyncWeb3.to_checksum_address(address)
        ).call()
        return held
    finally:
        await w3.provider.disconnect()


async def key_state(pool: asyncpg.Pool, address: str) -> str | None:
    state: str | None = await pool.fetchval(
        "SELECT state FROM operator_keys WHERE address = $1", address
    )
    return state


async def chain_id(settings: Settings) -> int:
    node = Node.connect(settings.require_chain()[0])
    try:
        return await node.chain_id()
    finally:
        await node.close()


async def deployer_nonce(settings: Settings) -> int:
    """Transactions the deployer (the Distributors' admin) has sent: none for a no-op."""
    rpc_url, key = settings.require_deployer()
    node = Node.connect(rpc_url)
    try:
        return await node.pending_nonce(Account.from_key(key.get_secret_value()).address)
    finally:
        await node.close()


async def second_distributor(settings: Settings, pool: asyncpg.Pool) -> str:
    deployer = Deployer(*settings.require_deployer())
    try:
        async with pool.acquire() as conn:
            d = await deploy_tokenization(
                deployer, conn, tokenization_id="tok-2", property_id="prop-2", operator=[],
                name="Second", symbol="SEC", decimals=18, supply=10**24,
            )  # fmt: skip
    finally:
        await deployer.close()
    return d.distributor_address


async def new_key(settings: Settings) -> LocalAccount:
    account: LocalAccount = Account.create()
    await harness.fund(settings.require_chain()[0], account.address)
    return account


async def open_batch(pool: asyncpg.Pool, tk: Deployment, sender: str) -> int:
    """A batch as the consumer stores it once signed: in flight under ``sender``."""
    chain_id = await pool.fetchval("SELECT chain_id FROM tokenizations WHERE id = $1", "tok-1")
    batch_id: int = await pool.fetchval(
        """
        INSERT INTO batches (chain_id, sender, nonce, distributor_address, first_index, size,
                             calldata, gas_limit, state)
        VALUES ($1, $2, 0, $3, 0, 1, '\\x00', 100000, 'submitted') RETURNING id
        """,
        chain_id,
        sender,
        tk.distributor_address,
    )
    return batch_id


async def polling_inflight(pool: asyncpg.Pool) -> bool:
    """Whether a ``keys remove`` has looked at the key's batches in flight (so it is in
    its wait): its connection's last statement is that count."""
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
        " WHERE datname = current_database() AND query = $1)",
        queries.K_INFLIGHT,
    )
    return found


async def test_keys_add_grants_the_role_on_every_distributor_and_activates(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    second = await second_distributor(settings, pool)
    key = await new_key(settings)

    run = await tokendist(settings, "keys", "add", key.address.lower())

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines() == [
        f"key {key.address} active on chain {await chain_id(settings)}: "
        "operator of its 2 Distributors (2 granted now); gas 1000.0000 ETH"
    ]
    for distributor in (tokenization.distributor_address, second):
        assert await has_role(settings, distributor, key.address)
    assert await key_state(pool, key.address) == "active"

    sent = await deployer_nonce(settings)
    again = await tokendist(settings, "keys", "add", key.address)
    assert again.returncode == 0, again.stderr
    assert "(0 granted now)" in again.stdout
    assert await deployer_nonce(settings) == sent, "a role already held costs no transaction"

    listing = await tokendist(settings, "keys", "list")
    assert listing.returncode == 0, listing.stderr
    assert f"{key.address}  active    0 batches in flight  next nonce -" in listing.stdout
    status = await tokendist(settings, "status")
    assert status.returncode == 0, status.stderr
    assert (
        f"operator key  {key.address} active: 0 batches in flight, gas 1000.0000 ETH"
        in status.stdout
    )


async def test_keys_remove_drains_waits_for_the_open_batch_then_revokes(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    key = await new_key(settings)
    assert (await tokendist(settings, "keys", "add", key.address)).returncode == 0
    batch_id = await open_batch(pool, tokenization, key.address)

    early = await tokendist(settings, "keys", "remove", key.address, "--wait", "0")

    line = one_line_error(early, 1)
    assert f"key {key.address} is draining" in line
    assert "1 batches still signed or submitted" in line
    assert await key_state(pool, key.address) == "draining"
    assert await has_role(settings, tokenization.distributor_address, key.address)

    waiting = asyncio.create_task(tokendist(settings, "keys", "remove", key.address))
    await harness.wait_until(lambda: polling_inflight(pool), what="keys remove waiting")
    assert not waiting.done()
    await pool.execute("UPDATE batches SET state = 'confirmed' WHERE id = $1", batch_id)
    removed = await waiting

    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == (
        f"key {key.address} removed on chain {await chain_id(settings)}: "
        "operator role revoked on 1 of its 1 Distributors (the rest had none)"
    )
    assert not await has_role(settings, tokenization.distributor_address, key.address)
    assert await key_state(pool, key.address) == "removed"

    chain = Chain(settings.require_chain()[0], LocalSigner(bytes(key.key)))
    try:
        payment = (b"\x01" * 32, harness.wallet(0), 10**18)
        with pytest.raises(KeyRejected, match="AccessControlUnauthorizedAccount"):
            await chain.estimate(
                tokenization.distributor_address, contracts.batch_calldata(0, [payment])
            )
    finally:
        await chain.close()

    sent = await deployer_nonce(settings)
    again = await tokendist(settings, "keys", "remove", key.address)
    assert again.returncode == 0, again.stderr
    assert "revoked on 0 of its 1" in again.stdout
    assert await deployer_nonce(settings) == sent

    back = await tokendist(settings, "keys", "add", key.address)
    assert back.returncode == 0, back.stderr
    assert await has_role(settings, tokenization.distributor_address, key.address)
    assert await key_state(pool, key.address) == "active"


async def test_removing_a_key_that_holds_the_role_but_was_never_registered(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """The deploy's operator holds the role before any consumer registered it."""
    operator = Account.from_key(settings.require_chain()[1].get_secret_value()).address

    run = await tokendist(settings, "keys", "remove", operator)

    assert run.returncode == 0, run.stderr
    assert not await has_role(settings, tokenization.distributor_address, operator)
    assert await key_state(pool, operator) == "removed"


def bad_inputs(settings: Settings, tk: Deployment) -> list[list[str]]:
    deployer = Account.from_key(settings.require_deployer()[1].get_secret_value()).address
    unknown = Account.create().address
    return [
        ["keys", "add", "0x12"],
        ["keys", "add", "0x" + "00" * 20],
        ["keys", "add", unknown.lower()[:-1] + "G"],
        ["keys", "add", FIXED_ADDRESS[:2] + FIXED_ADDRESS[2:].swapcase()],  # a bad EIP-55 sum
        ["keys", "add", deployer],
        ["keys", "add", tk.distributor_address],
        ["keys", "remove", unknown],
        ["keys", "remove", tk.token_address, "--wait", "-1"],
        ["keys", "remove", unknown, "--wait", "nan"],
    ]


async def test_bad_input_is_one_line_exit_2_and_nothing_written_or_sent(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    sent = await deployer_nonce(settings)
    for command in bad_inputs(settings, tokenization):
        run = await tokendist(settings, *command)
        assert run.returncode == 2, (command, run.stderr)
        assert "Traceback" not in run.stderr
        # argparse's refusal: its usage line, then the one line that says why.
        *usage, why = run.stderr.strip().splitlines()
        assert all(line.startswith("usage:") for line in usage), (command, run.stderr)
        assert why.startswith("tokendist"), (command, run.stderr)
        assert "error: " in why, (command, run.stderr)
    assert await pool.fetchval("SELECT count(*) FROM operator_keys") == 0
    assert await deployer_nonce(settings) == sent


@pytest.mark.parametrize(
    "command",
    [["keys", "list"], ["keys", "add", FIXED_ADDRESS], ["keys", "remove", FIXED_ADDRESS]],
    ids=" ".join,
)
async def test_the_node_down_is_one_line_and_exit_1_without_a_secret(
    settings: Settings, tokenization: Deployment, command: list[str]
) -> None:
    run = await tokendist(settings, *command, env={"TOKENDIST_RPC_URL": f"http://{CLOSED}"})
    assert "is the Ethereum node up" in one_line_error(run, 1)
    for _, secret in (settings.require_deployer(), settings.require_chain()):
        assert secret.get_secret_value().removeprefix("0x") not in run.stdout + run.stderr
