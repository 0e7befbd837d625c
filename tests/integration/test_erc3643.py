"""ERC-3643 (T-REX 4.1.6 and ONCHAINID 2.2.1, the real contracts) on anvil: the suite
`chain deploy --standard erc3643` deploys, the Distributor's batch to verified and
unregistered investors, the pre-flight's answer for each refusal, KYC approve/revoke on
the chain (idempotent, finished after a crash), and gas per payment from receipts."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from pydantic import SecretStr

from tests.integration import harness
from tests.integration.test_contracts import Sender
from tests.integration.test_operator_commands import one_line_error, tokendist
from tokendist.bench import chain_stage
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.consumer.compliance import EthCall, Refusal, RefusalReason, preflight
from tokendist.consumer.repository import Repository
from tokendist.core.errors import InvalidInput
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops import kyc
from tokendist.ops.deploy import Deployment
from tokendist.ops.reconcile import Reconciler
from tokendist.ops.repository import ToolRepository
from tokendist.ops.trex import Platform, Trex, deploy_erc3643_tokenization
from tokendist.sim import payments as payments_sim

pytestmark = pytest.mark.integration

NIGERIA, KENYA, FRANCE = 566, 404, 250
FUND = 10**27


@dataclass
class Suite:
    deployment: Deployment
    trex: Trex
    operator_key: str
    rpc_url: str
    row: asyncpg.Record


@pytest.fixture
async def suite(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Suite]:
    rpc_url, key = settings.require_deployer()
    _, operator_key = settings.require_chain()
    trex = Trex(rpc_url, key)
    try:
        async with pool.acquire() as conn:
            deployment = await deploy_erc3643_tokenization(
                trex,
                conn,
                tokenization_id="tok-3643",
                property_id="prop-1",
                operator=Account.from_key(operator_key.get_secret_value()).address,
                name="Lekki Towers",
                symbol="LKT",
                decimals=18,
                supply=FUND,
                country=NIGERIA,
            )
            [row] = await ToolRepository(conn).erc3643_suites()
        yield Suite(deployment, trex, operator_key.get_secret_value(), rpc_url, row)
    finally:
        await trex.close()


async def approve(pool: asyncpg.Pool, s: Suite, user: str, wallet: str, country: int) -> int:
    async with pool.acquire() as conn:
        return await kyc.approve(conn, user, wallet, trex=s.trex, country=country)


def payments(wallets: list[str], amount: int = 10**18) -> list[tuple[bytes, str, int]]:
    return [
        (contracts.payment_id(f"inv-{i}-{secrets.token_hex(4)}"), w, amount)
        for i, w in enumerate(wallets)
    ]


async def balance(s: Suite, wallet: str) -> int:
    token = s.trex.contract("Token", s.deployment.token_address)
    result: int = await s.trex.read(token.functions.balanceOf(wallet))
    return result


async def nonce(s: Suite) -> int:
    return await s.trex.w3.eth.get_transaction_count(s.trex.account.address)


async def test_suite_is_wired_as_tokeny_deploys_it(suite: Suite) -> None:
    s, d = suite, suite.deployment
    token = s.trex.contract("Token", d.token_address).functions
    assert await s.trex.read(token.identityRegistry()) == s.row["identity_registry"]
    assert await s.trex.read(token.compliance()) == s.row["compliance"]
    assert not await s.trex.read(token.paused())
    assert await s.trex.read(token.isAgent(s.trex.account.address))
    # The Distributor holds the fund because it is itself a verified holder.
    assert await s.trex.is_verified(s.row["identity_registry"], d.distributor_address)
    assert await balance(s, d.distributor_address) == FUND


async def test_batch_pays_a_verified_investor_and_reverts_for_an_unregistered_one(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    s, d = suite, suite.deployment
    verified, unregistered = Account.create().address, Account.create().address
    await approve(pool, s, "user-v", verified, NIGERIA)
    sender = Sender(s.rpc_url, s.operator_key)
    sender_chain = Chain(s.rpc_url, LocalSigner(SecretStr(s.operator_key)))
    try:
        ok = await sender.send(
            d.distributor_address, contracts.batch_calldata(0, payments([verified]))
        )
        assert ok["status"] == 1
        assert await balance(s, verified) == 10**18
        # The premise of the pre-flight: one unregistered investor reverts the whole batch.
        mixed = payments([Account.create().address, unregistered])
        await approve(pool, s, "user-m", mixed[0][1], NIGERIA)
        reverted = await sender.send(d.distributor_address, contracts.batch_calldata(1, mixed))
        assert reverted["status"] == 0
        assert await balance(s, mixed[0][1]) == 0
        refused = await preflight(
            sender_chain.call, d.token_address, d.distributor_address,
            [(p[0], p[1], p[2]) for p in mixed],
        )  # fmt: skip
        assert refused == {
            mixed[1][0]: Refusal(
                RefusalReason.AWAITING_KYC, f"wallet {unregistered} has no verified identity"
            )
        }
    finally:
        await sender.close()
        await sender_chain.close()


async def test_preflight_names_each_refusal(suite: Suite, pool: asyncpg.Pool) -> None:
    s = suite
    chain = Chain(s.rpc_url, LocalSigner(SecretStr(s.operator_key)))
    try:
        await _preflight_refusals(s, pool, chain.call)
    finally:
        await chain.close()


async def _preflight_refusals(s: Suite, pool: asyncpg.Pool, call: EthCall) -> None:
    d = s.deployment
    a, b, c = (Account.create().address for _ in range(3))
    await approve(pool, s, "user-a", a, NIGERIA)
    await approve(pool, s, "user-b", b, KENYA)
    await approve(pool, s, "user-c", c, FRANCE)
    batch = [("e-a", a, 10**18), ("e-b", b, 10**18), ("e-c", c, 10**18)]
    assert await preflight(call, d.token_address, d.distributor_address, batch) == {}

    # A module of T-REX's own set: France restricted by CountryRestrictModule.
    module = await s.trex._deploy("CountryRestrictModule")
    await s.trex.send(s.trex.contract("CountryRestrictModule", module).functions.initialize())
    compliance = s.trex.contract("ModularCompliance", s.row["compliance"]).functions
    await s.trex.send(compliance.addModule(module))
    selector, types = contracts.function("CountryRestrictModule", "addCountryRestriction")
    await s.trex.send(
        compliance.callModuleFunction(selector + abi_encode(list(types), [FRANCE]), module)
    )
    refused = await preflight(call, d.token_address, d.distributor_address, batch)
    assert list(refused) == ["e-c"]
    assert refused["e-c"].reason is RefusalReason.COMPLIANCE_REFUSED
    assert refused["e-c"].module == "CountryRestrictModule"

    token = s.trex.contract("Token", d.token_address).functions
    await s.trex.send(token.setAddressFrozen(b, True))
    refused = await preflight(call, d.token_address, d.distributor_address, batch)
    assert {k: r.reason for k, r in refused.items()} == {
        "e-b": RefusalReason.WALLET_FROZEN,
        "e-c": RefusalReason.COMPLIANCE_REFUSED,
    }

    await s.trex.send(token.pause())
    refused = await preflight(call, d.token_address, d.distributor_address, batch)
    assert {r.reason for r in refused.values()} == {RefusalReason.TOKEN_PAUSED}
    assert set(refused) == {"e-a", "e-b", "e-c"}

    # Each condition cleared, the same payments pass.
    await s.trex.send(token.unpause())
    await s.trex.send(token.setAddressFrozen(b, False))
    selector, types = contracts.function("CountryRestrictModule", "removeCountryRestriction")
    await s.trex.send(
        compliance.callModuleFunction(selector + abi_encode(list(types), [FRANCE]), module)
    )
    assert await preflight(call, d.token_address, d.distributor_address, batch) == {}


async def test_kyc_approve_and_revoke_on_chain_are_idempotent(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    s, ir = suite, suite.row["identity_registry"]
    wallet = Account.create().address
    await approve(pool, s, "user-1", wallet, KENYA)
    assert await s.trex.is_verified(ir, wallet)
    registry = s.trex.contract("IdentityRegistry", ir).functions
    identity = await s.trex.read(registry.identity(wallet))
    assert await s.trex.read(registry.investorCountry(wallet)) == KENYA

    before = await nonce(s)
    await approve(pool, s, "user-1", wallet, KENYA)  # again: not one transaction
    assert await nonce(s) == before
    assert await s.trex.read(registry.identity(wallet)) == identity

    async with pool.acquire() as conn:
        assert await kyc.revoke(conn, "user-1", trex=s.trex)
        row = await conn.fetchrow(
            "SELECT u.kyc_status, o.state FROM users u JOIN onchain_identities o "
            "ON o.user_id = u.id WHERE u.id = 'user-1'"
        )
        assert row is not None
        assert (row["kyc_status"], row["state"]) == ("rejected", "removed")
        assert not await s.trex.is_verified(ir, wallet)
        before = await nonce(s)
        assert not await kyc.revoke(conn, "user-1", trex=s.trex)  # again: nothing to do
        assert await nonce(s) == before

    # Approved again: the same ONCHAINID (the factory links it to the wallet) comes back.
    await approve(pool, s, "user-1", wallet, KENYA)
    assert await s.trex.read(registry.identity(wallet)) == identity
    assert await s.trex.is_verified(ir, wallet)


async def test_kyc_interrupted_between_database_and_chain_is_finished_by_reconcile(
    suite: Suite, settings: Settings, pool: asyncpg.Pool
) -> None:
    s, ir = suite, suite.row["identity_registry"]
    registering, removing = Account.create().address, Account.create().address
    await approve(pool, s, "user-r", removing, NIGERIA)
    async with pool.acquire() as conn:
        ops = ToolRepository(conn)
        # A crash right after each command's first transaction: the intent is recorded,
        # the chain untouched, the user not approved (nothing is paid meanwhile).
        await ops.begin_registration("user-n", registering, KENYA)
        assert await ops.begin_removal("user-r") == removing
        assert not await s.trex.is_verified(ir, registering)
        assert await s.trex.is_verified(ir, removing)
        assert await conn.fetchval("SELECT kyc_status FROM users WHERE id = 'user-n'") == "pending"

    chain = Chain(s.rpc_url, LocalSigner(SecretStr(s.operator_key)))
    try:
        without_key = Reconciler(
            Repository(pool), ToolRepository(pool), chain, settings.chain_check()
        )
        hint = "set TOKENDIST_DEPLOYER_KEY and reconcile again"
        assert (await without_key.run(grace_s=0)).for_a_human == [
            f"user user-n: on-chain identity registering; {hint}",
            f"user user-r: on-chain identity removing; {hint}",
        ]
        rec = Reconciler(
            Repository(pool), ToolRepository(pool), chain, settings.chain_check(), s.trex
        )
        assert (await rec.run(grace_s=3600)).identities == 0  # a kyc command may be mid-way
        assert (await rec.run(grace_s=0, dry_run=True)).identities == 2
        assert not await s.trex.is_verified(ir, registering)
        assert (await rec.run(grace_s=0)).identities == 2
    finally:
        await chain.close()
    async with pool.acquire() as conn:
        assert await s.trex.is_verified(ir, registering)
        assert not await s.trex.is_verified(ir, removing)
        rows = await conn.fetch("SELECT user_id, state FROM onchain_identities")
        states = {r["user_id"]: r["state"] for r in rows}
        assert states == {"user-n": "registered", "user-r": "removed"}
        assert await conn.fetchval("SELECT kyc_status FROM users WHERE id = 'user-n'") == "approved"
        assert await ToolRepository(conn).unfinished_identities(0) == []


async def test_gas_per_payment_of_a_trex_batch(suite: Suite, pool: asyncpg.Pool) -> None:
    s, d = suite, suite.deployment
    n = 20
    wallets = [Account.create().address for _ in range(n)]
    for i, wallet in enumerate(wallets):
        await approve(pool, s, f"user-g{i}", wallet, NIGERIA)
    sender = Sender(s.rpc_url, s.operator_key)
    try:
        first = await sender.send(
            d.distributor_address, contracts.batch_calldata(0, payments(wallets))
        )
        again = await sender.send(
            d.distributor_address, contracts.batch_calldata(n, payments(wallets))
        )
    finally:
        await sender.close()
    assert first["status"] == again["status"] == 1
    assert [await balance(s, w) for w in wallets] == [2 * 10**18] * n
    new_holder, existing_holder = first["gasUsed"] / n, again["gasUsed"] / n
    print(  # noqa: T201 -- the figures the closing note reports
        f"T-REX batch of {n}: gas per payment {new_holder:.0f} (new holders), "
        f"{existing_holder:.0f} (existing holders)"
    )
    assert new_holder > existing_holder


async def test_approve_without_country_or_deployer_key_is_refused(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    wallet = Account.create().address
    async with pool.acquire() as conn:
        with pytest.raises(InvalidInput, match="pass --country"):
            await kyc.approve(conn, "user-x", wallet, trex=suite.trex)
        with pytest.raises(InvalidInput, match="deployer key"):
            await kyc.approve(conn, "user-x", wallet, country=NIGERIA)
        assert await conn.fetchval("SELECT count(*) FROM onchain_identities") == 0
        assert await conn.fetchval("SELECT count(*) FROM users WHERE id = 'user-x'") == 0


async def test_the_commands_deploy_approve_and_revoke(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    run = await tokendist(
        settings, "chain", "deploy", "--tokenization-id", "tok-c", "--property-id", "p",
        "--standard", "erc3643", "--country", str(NIGERIA), "--supply", str(FUND),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "(erc3643)" in run.stdout
    async with pool.acquire() as conn:
        [row] = await ToolRepository(conn).erc3643_suites()
    wallet = Account.create().address
    rpc_url, key = settings.require_deployer()
    trex = Trex(rpc_url, key)
    try:
        missing = await tokendist(settings, "kyc", "approve", "user-c", "--wallet", wallet)
        assert one_line_error(missing, 2).endswith("pass --country")
        run = await tokendist(
            settings, "kyc", "approve", "user-c", "--wallet", wallet, "--country", str(KENYA)
        )
        assert run.returncode == 0, run.stderr
        assert await trex.is_verified(row["identity_registry"], wallet)
        run = await tokendist(settings, "kyc", "revoke", "user-c")
        assert run.returncode == 0, run.stderr
        assert "identity removed" in run.stdout
        assert not await trex.is_verified(row["identity_registry"], wallet)
        unknown = await tokendist(settings, "kyc", "revoke", "nobody")
        assert "not known" in one_line_error(unknown, 2)
    finally:
        await trex.close()


async def test_the_consumer_parks_an_unverified_investor_unsigned_then_pays_after_kyc_approve(
    settings: Settings, pool: asyncpg.Pool, suite: Suite
) -> None:
    """A payment to an investor without a verified identity on-chain is parked before
    anything is signed (the token would revert the whole batch, every batch-mate with it),
    and paid once ``kyc approve`` has registered the identity and re-driven it."""
    d = suite.deployment
    verified = harness.payment(d, 1, user=0)
    unverified = harness.payment(d, 2, user=1)  # approved before this token existed
    assert verified.wallet_address is not None
    assert unverified.wallet_address is not None
    await approve(pool, suite, verified.user_id, verified.wallet_address, NIGERIA)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, verified)
        await harness.pay(pool, unverified)
        await harness.wait_until(lambda: _state_is(pool, "inv-1", "credited"), what="inv-1")
        await harness.wait_until(lambda: _state_is(pool, "inv-2", "awaiting_kyc"), what="park")
        batched = "SELECT count(*) FROM distributions WHERE batch_id IS NOT NULL"
        assert await pool.fetchval(batched) == 1, "the parked payment is in no batch"
        assert await pool.fetchval("SELECT count(*) FROM batches WHERE state = 'reverted'") == 0
        released = await approve(
            pool, suite, unverified.user_id, unverified.wallet_address, NIGERIA
        )
        assert released == 1
        await harness.wait_until(lambda: _state_is(pool, "inv-2", "credited"), what="inv-2")
    assert await balance(suite, verified.wallet_address) == verified.tokens
    assert await balance(suite, unverified.wallet_address) == unverified.tokens
    paid = sorted((p.to, p.amount) for p in await harness.payouts(settings, d))
    bought = [
        (verified.wallet_address, verified.tokens),
        (unverified.wallet_address, unverified.tokens),
    ]
    assert paid == sorted((wallet.lower(), tokens) for wallet, tokens in bought)


async def _state_is(pool: asyncpg.Pool, investment: str, state: str) -> bool:
    return await harness.state_of(pool, investment) == state


# --- parked with a reason, released when it clears (the real consumer) --------------------


async def _parked(pool: asyncpg.Pool) -> dict[str, tuple[str | None, str | None]]:
    rows = await pool.fetch(
        "SELECT investment_id, parked_reason, parked_detail FROM distributions"
        " WHERE state = 'awaiting_kyc'"
    )
    return {r["investment_id"]: (r["parked_reason"], r["parked_detail"]) for r in rows}


async def _reason_is(pool: asyncpg.Pool, investment: str, reason: str) -> bool:
    return (await _parked(pool)).get(investment, (None, None))[0] == reason


async def _nothing_wasted(s: Suite, pool: asyncpg.Pool) -> None:
    """Nothing reverted and every nonce of the operator went to a batch that paid: a
    parked payment cost no nonce and no gas."""
    assert await pool.fetchval("SELECT count(*) FROM batches WHERE state = 'reverted'") == 0
    operator = Account.from_key(s.operator_key).address
    sent = await s.trex.w3.eth.get_transaction_count(operator)
    assert sent == await pool.fetchval("SELECT count(DISTINCT nonce) FROM batches")


async def _paid_as_bought(
    s: Suite, settings: Settings, pool: asyncpg.Pool, bought: list[payments_sim.Payment]
) -> None:
    """Each wallet holds what it bought, one Transfer per payment, every row credited."""
    for p in bought:
        assert p.wallet_address is not None
        assert await balance(s, p.wallet_address) == p.tokens
    paid = sorted((p.to, p.amount) for p in await harness.payouts(settings, s.deployment))
    assert paid == sorted((str(p.wallet_address).lower(), p.tokens) for p in bought)
    assert await harness.credited(pool) == len(bought)


def _rechecking(settings: Settings) -> Settings:
    return settings.model_copy(update={"parked_recheck_interval_s": 0.3})


async def test_a_paused_token_parks_payments_unsigned_and_they_are_paid_once_unpaused(
    settings: Settings, pool: asyncpg.Pool, suite: Suite
) -> None:
    s, d = suite, suite.deployment
    first, second = harness.payment(d, 1, user=0), harness.payment(d, 2, user=1)
    for p in (first, second):
        await approve(pool, s, p.user_id, str(p.wallet_address), NIGERIA)
    token = s.trex.contract("Token", d.token_address).functions
    await s.trex.send(token.pause())
    settings = _rechecking(settings)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, first)
        await harness.pay(pool, second)
        await harness.wait_until(lambda: _count_parked(pool, 2), what="both parked")
        assert {r for r, _ in (await _parked(pool)).values()} == {"token_paused"}
        assert await pool.fetchval("SELECT count(*) FROM batches") == 0
        status = await tokendist(settings, "status")
        assert "token_paused: 2 payments" in status.stdout, status.stdout
        await s.trex.send(token.unpause())
        await harness.wait_until(lambda: _count_credited(pool, 2), what="both credited")
    await _nothing_wasted(s, pool)
    await _paid_as_bought(s, settings, pool, [first, second])


async def test_frozen_refused_and_unregistered_payments_park_and_each_is_released_alone(
    settings: Settings, pool: asyncpg.Pool, suite: Suite
) -> None:
    """Four investors: one paid at once; a frozen wallet (released by unfreezing it), an
    investor whose country a T-REX CountryRestrictModule refuses (released when the
    module's restriction is lifted) and one approved here but never registered on-chain
    (released when the issuer registers the identity): each parked with its reason, none
    signed, each paid by the consumer's re-check once its own condition clears."""
    s, d = suite, suite.deployment
    ok, frozen, french, unregistered = (harness.payment(d, i, user=i) for i in range(4))
    await approve(pool, s, ok.user_id, str(ok.wallet_address), NIGERIA)
    await approve(pool, s, frozen.user_id, str(frozen.wallet_address), NIGERIA)
    await approve(pool, s, french.user_id, str(french.wallet_address), FRANCE)
    token = s.trex.contract("Token", d.token_address).functions
    await s.trex.send(token.setAddressFrozen(frozen.wallet_address, True))
    module, set_restricted = await _country_restriction(s)
    await set_restricted(FRANCE, True)
    settings = _rechecking(settings)
    async with harness.relay(settings), harness.consumer(settings):
        for p in (ok, frozen, french, unregistered):
            await harness.pay(pool, p)  # registered approved in the database, all four
        await harness.wait_until(lambda: _count_parked(pool, 3), what="three parked")
        await harness.wait_until(lambda: _count_credited(pool, 1), what="one credited")
        parked = await _parked(pool)
        assert {inv: reason for inv, (reason, _) in parked.items()} == {
            frozen.investment_id: "wallet_frozen",
            french.investment_id: "compliance_refused",
            unregistered.investment_id: "awaiting_kyc",
        }
        assert "CountryRestrictModule" in str(parked[french.investment_id][1])
        assert await pool.fetchval("SELECT count(*) FROM batches") == 1
        status = (await tokendist(settings, "status")).stdout
        assert "compliance_refused: 1 payments" in status, status
        assert "CountryRestrictModule" in status, status

        await s.trex.send(token.setAddressFrozen(frozen.wallet_address, False))
        await harness.wait_until(
            lambda: _state_is(pool, frozen.investment_id, "credited"), what="unfrozen"
        )
        await set_restricted(FRANCE, False)
        await harness.wait_until(
            lambda: _state_is(pool, french.investment_id, "credited"), what="lifted"
        )
        assert await _reason_is(pool, unregistered.investment_id, "awaiting_kyc")
        await _register_outside(s, str(unregistered.wallet_address), KENYA)
        await harness.wait_until(
            lambda: _state_is(pool, unregistered.investment_id, "credited"), what="registered"
        )
    assert module
    await _nothing_wasted(s, pool)
    await _paid_as_bought(s, settings, pool, [ok, frozen, french, unregistered])


async def _country_restriction(s: Suite) -> tuple[str, Any]:
    """T-REX's CountryRestrictModule bound to the suite's compliance; and a setter."""
    module = await s.trex._deploy("CountryRestrictModule")
    await s.trex.send(s.trex.contract("CountryRestrictModule", module).functions.initialize())
    compliance = s.trex.contract("ModularCompliance", s.row["compliance"]).functions
    await s.trex.send(compliance.addModule(module))

    async def restricted(country: int, on: bool) -> None:
        fn = "addCountryRestriction" if on else "removeCountryRestriction"
        selector, types = contracts.function("CountryRestrictModule", fn)
        await s.trex.send(
            compliance.callModuleFunction(selector + abi_encode(list(types), [country]), module)
        )

    return module, restricted


async def _register_outside(s: Suite, wallet: str, country: int) -> None:
    """The issuer registers the identity itself (not through ``kyc approve``)."""
    platform = Platform(id_factory=s.row["id_factory"], claim_issuer=s.row["claim_issuer"])
    identity = await s.trex.ensure_identity(platform, wallet)
    await s.trex.ensure_kyc_claim(identity, platform.claim_issuer)
    await s.trex.ensure_registered(s.row["identity_registry"], wallet, identity, country)


async def _count_parked(pool: asyncpg.Pool, n: int) -> bool:
    return len(await _parked(pool)) == n


async def _count_credited(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n


def test_the_demo_runs_on_a_trex_token_to_a_green_verify(stack: object) -> None:
    """``tokendist demo --standard erc3643``: a T-REX suite, the investors' identities
    registered on-chain, the late ones parked and released by ``kyc approve``."""
    out = harness.run_demo(
        "--standard", "erc3643", "--payments", "24", "--rate", "40", "--users", "10",
        timeout=300,
    )  # fmt: skip
    assert "(erc3643)" in out
    assert "8 investors' identities registered on-chain" in out
    assert "verdict: all invariants hold" in out


# --- verify and reconcile read a T-REX token as they read the ERC-20 ------------------------


async def test_verify_holds_on_a_trex_token_and_sees_tokens_minted_behind_its_back(
    settings: Settings, pool: asyncpg.Pool, suite: Suite
) -> None:
    s, d = suite, suite.deployment
    bought = [harness.payment(d, i, user=i) for i in range(3)]
    for p in bought:
        await approve(pool, s, p.user_id, str(p.wallet_address), NIGERIA)
    async with harness.relay(settings), harness.consumer(settings):
        for p in bought:
            await harness.pay(pool, p)
        await harness.wait_until(lambda: _count_credited(pool, 3), what="three credited")
    report = await harness.run_verify(settings, pool)
    assert report.ok, report.render()
    # The agent mints to an investor outside this system: its balanceOf no longer matches.
    token = s.trex.contract("Token", d.token_address).functions
    await s.trex.send(token.mint(bought[0].wallet_address, 5))
    report = await harness.run_verify(settings, pool)
    assert not report.ok
    assert f"holds {bought[0].tokens + 5} of {d.tokenization_id}" in report.render()


async def test_reconcile_credits_and_redrives_on_a_trex_token(
    settings: Settings, pool: asyncpg.Pool, suite: Suite
) -> None:
    """As on the ERC-20: a payment confirmed on-chain whose consumer crashed before the
    credit is credited from the token's logs; one whose outbox row was lost is re-driven."""
    s, d = suite, suite.deployment
    first, second = harness.payment(d, 1, user=0), harness.payment(d, 2, user=1)
    for p in (first, second):
        await approve(pool, s, p.user_id, str(p.wallet_address), NIGERIA)
    await harness.pay(pool, first)
    async with harness.relay(settings):
        crashing = harness.Process(
            settings, "consume", extra_env={"TOKENDIST_FAILPOINTS": "after:confirmed"}
        )
        await asyncio.to_thread(crashing.proc.wait, 60)
    assert await harness.state_of(pool, "inv-1") == "confirmed"
    await harness.pay(pool, second)
    await pool.execute("DELETE FROM outbox WHERE published_at IS NULL")
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    rec = Reconciler(Repository(pool), ToolRepository(pool), chain, settings.chain_check())
    try:
        done = await rec.run(grace_s=0)
    finally:
        await chain.close()
    assert (len(done.credited), len(done.redriven)) == (1, 1)
    assert await harness.state_of(pool, "inv-1") == "credited"
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: _count_credited(pool, 2), what="re-driven payment")
    await _paid_as_bought(s, settings, pool, [first, second])
    assert (await harness.run_verify(settings, pool)).ok


async def test_the_bench_chain_stage_measures_trex_gas_beside_the_erc20(
    settings: Settings,
) -> None:
    """``tokendist bench --standards erc20,erc3643``'s chain stage, small: the same
    recipients paid in the same batches from each token's Distributor, from receipts."""
    recipients = [Account.create().address for _ in range(10)]
    own = settings.model_copy(update={"batch_max_size": 5})
    gas = {}
    for standard, stage in (
        ("erc20", await chain_stage.deploy(own, 1)),
        ("erc3643", await chain_stage.deploy_trex(own, 1, recipients)),
    ):
        new = await chain_stage.sent_and_mined(stage, "new", recipients, 0)
        existing = await chain_stage.sent_and_mined(stage, "existing", recipients, 10)
        assert (new.batches, existing.batches) == (2, 2)
        gas[standard] = (new.gas_per_payment, existing.gas_per_payment)
    print(f"gas per payment, batches of 5 (new, existing holder): {gas}")  # noqa: T201
    for standard in gas:
        assert gas[standard][0] > gas[standard][1]
    # Each T-REX transfer asks the identity registry and the compliance besides.
    assert gas["erc3643"][0] > gas["erc20"][0]
    assert gas["erc3643"][1] > gas["erc20"][1]
