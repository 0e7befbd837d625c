"""Operator keys out of the environment (issue 15, part 5), against real services: a key
held by local-kms (the AWS KMS API) and a Web3 Secret Storage keystore each pay a batch
through the real consumer; a wrong keystore password stops ``consume`` at start-up with
one line; while KMS is down the consumer waits and fails no payment, and pays once it is
back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from eth_account import Account

from tests.integration import harness, kms
from tokendist import custody
from tokendist.consumer.chain import Chain
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployer, Deployment, deploy_tokenization

pytestmark = pytest.mark.integration

N = 30
PASSWORD = "correct horse battery staple"  # noqa: S105 -- a test keystore's


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consumers started here inherit this environment: no raw key of the stack's in it,
    and credentials for boto3, which signs every request (local-kms checks none;
    ``stack.sh env`` sets the same placeholders)."""
    monkeypatch.delenv("TOKENDIST_OPERATOR_KEY", raising=False)
    monkeypatch.delenv("TOKENDIST_OPERATOR_KEYS", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "local"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "local"))


@pytest.fixture
def kms_endpoint() -> str:
    url = os.environ.get("TOKENDIST_KMS_ENDPOINT_URL")
    if not url:
        pytest.fail(
            "TOKENDIST_KMS_ENDPOINT_URL not set: `make stack-up` starts local-kms, then "
            'eval "$(stack/stack.sh env)"',
            pytrace=False,
        )
    return url


def keystore_file(tmp_path: Path, key: bytes) -> Path:
    # A light scrypt cost: the tests decrypt it in every consumer they start.
    keyfile = Account.encrypt(key, PASSWORD, kdf="scrypt", iterations=2**12)
    path = tmp_path / "operator.json"
    path.write_text(json.dumps(keyfile))
    return path


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "password"
    path.write_text(password + "\n")
    return path


def kms_settings(settings: Settings, endpoint: str, key_id: str) -> Settings:
    return settings.model_copy(
        update={
            "operator_key": None,
            "operator_kms_key_ids": key_id,
            "kms_endpoint_url": endpoint,
            "kms_region": kms.REGION,
        }
    )


def keystore_settings(settings: Settings, keystore: Path, password: Path) -> Settings:
    return settings.model_copy(
        update={
            "operator_key": None,
            "operator_keystores": str(keystore),
            "operator_keystore_password_file": str(password),
        }
    )


async def operated_by_custody(settings: Settings, pool: asyncpg.Pool) -> tuple[Deployment, str]:
    """A tokenization whose only operator is the settings' one key (funded for gas), and
    that key's address."""
    (signer,) = await custody.operator_signers(settings)
    await harness.fund(settings.require_rpc(), signer.address)
    rpc_url, deployer_key = settings.require_deployer()
    deployer = Deployer(rpc_url, deployer_key)
    try:
        async with pool.acquire() as conn:
            tk = await deploy_tokenization(
                deployer, conn, tokenization_id="tok-custody", property_id="prop-custody",
                operator=[signer.address], name="Custody", symbol="CST", decimals=18,
                supply=10**30, fund=10**28,
            )  # fmt: skip
    finally:
        await deployer.close()
    return tk, signer.address


async def balances(settings: Settings, tk: Deployment, wallets: list[str]) -> dict[str, int]:
    # Any key reads: the raw one the fixture made is never an operator here.
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    try:
        return {w: await chain.token_balance(tk.token_address, w) for w in wallets}
    finally:
        await chain.close()


async def assert_paid_by(
    settings: Settings, sender: str, pool: asyncpg.Pool, tk: Deployment, expected: dict[str, int]
) -> None:
    """Every payment credited once, the tokens on-chain, every batch from ``sender``."""
    assert await harness.credited(pool) == N
    assert await balances(settings, tk, list(expected)) == expected
    senders = await pool.fetch("SELECT DISTINCT sender FROM batches")
    assert [r["sender"] for r in senders] == [sender]
    assert (await harness.run_verify(settings, pool)).ok


@pytest.mark.parametrize("where", ["kms", "keystore"])
async def test_a_key_out_of_the_environment_pays_a_batch_through_the_consumer(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, kms_endpoint: str, where: str
) -> None:
    if where == "kms":
        custodied = kms_settings(settings, kms_endpoint, await kms.create_key(kms_endpoint))
    else:
        key = Account.create().key
        custodied = keystore_settings(
            settings, keystore_file(tmp_path, key), password_file(tmp_path, PASSWORD)
        )
    tk, sender = await operated_by_custody(custodied, pool)
    expected = await harness.confirm_payments(pool, tk, N, users=5)
    async with harness.relay(custodied), harness.consumer(custodied):
        await harness.wait_until(lambda: credited_is(pool, N), what="every payment credited")
    await assert_paid_by(settings, sender, pool, tk, expected)


async def credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n


async def test_a_wrong_keystore_password_stops_consume_with_one_line(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    wrong = "Tr0ub4dor&3"
    custodied = keystore_settings(
        settings,
        keystore_file(tmp_path, Account.create().key),
        password_file(tmp_path, wrong),
    )
    env = {**os.environ, **harness.env_of(custodied)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tokendist.cli", "consume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("tokendist: error: keystore "), done.stderr
    assert "wrong password" in done.stderr
    assert wrong not in done.stderr
    assert PASSWORD not in done.stderr
    # Refused before anything was touched: no key registered, nothing claimed.
    assert await harness.count(pool, "SELECT count(*) FROM operator_keys") == 0
    assert await harness.count(pool, "SELECT count(*) FROM distributions") == 0


async def test_while_kms_is_down_the_consumer_waits_and_pays_once_it_is_back(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with kms.started(tmp_path) as server:
        custodied = kms_settings(settings, server.url, await kms.create_key(server.url))
        tk, sender = await operated_by_custody(custodied, pool)
        await harness.pay(pool, harness.payment(tk, 0, user=0))
        async with harness.relay(custodied):
            consumer = harness.Process(custodied, "consume")
            try:
                await harness.wait_until(lambda: credited_is(pool, 1), what="the first payment")
                await server.stop()
                expected = await harness.confirm_payments(pool, tk, N - 1, users=N - 1, start=1)
                await consumer.logged("batch_signing_retrying")
                claimed = "SELECT count(*) FROM distributions"
                await harness.wait_until(
                    lambda: count_is(pool, claimed, N), what="every payment claimed"
                )
                await consumer.logged("batch_signing_retrying")  # again, with all of them
                assert await harness.credited(pool) == 1, "nothing signed while KMS is down"
                failed = "SELECT count(*) FROM distributions WHERE state = 'failed'"
                assert await harness.count(pool, failed) == 0
                await server.start()
                await harness.wait_until(lambda: credited_is(pool, N), what="the rest, KMS back")
            finally:
                assert consumer.terminate() == 0
    first = harness.wallet(0)
    expected[first] = expected.get(first, 0) + harness.payment(tk, 0, user=0).tokens
    await assert_paid_by(settings, sender, pool, tk, expected)


async def count_is(pool: asyncpg.Pool, sql: str, n: int) -> bool:
    return await harness.count(pool, sql) == n
