"""``tokendist legacy audit`` and ``settle`` on a reproduced old system (tests/legacy):
real PostgreSQL (the old database is one of its own), real anvil, and for the settle the
real relay, Kafka and consumer. The commands run as the operator runs them: as
``tokendist`` processes, one of them SIGKILLed mid-settle by a failpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from eth_account import Account

from tests.integration import harness
from tests.legacy import history
from tests.legacy.history import UNIT, OldWallets
from tests.legacy.oldsystem import OldSystem
from tests.services import Services
from tokendist.consumer.chain import Chain
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployer, Deployment
from tokendist.ops.kyc import approve
from tokendist.ops.legacy.findings import Finding

USERS, INVESTMENTS = 170, 560


def tokendist(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokendist.cli", *args],
        env={**os.environ, **settings.as_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
async def legacy_dsn(stack: Services) -> AsyncIterator[str]:
    dsn = await history.create_database(stack.database_url)
    yield dsn
    await history.drop(stack.database_url, dsn)


def audit_args(dsn: str, tokens: dict[str, str], wallets: OldWallets, out: Path) -> list[str]:
    args = ["legacy", "audit", "--legacy-dsn", dsn, "--out", str(out), "--table", "5"]
    for tokenization_id, address in tokens.items():
        args += ["--token", f"{tokenization_id}={address}"]
    for address in wallets.addresses:
        args += ["--old-wallet", address]
    return args


def rows_by_investor(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(u, r["tokenization_id"]): r for r in doc["rows"] for u in r["users"]}


def check_against_truth(doc: dict[str, Any], old: OldSystem) -> Counter[str]:
    """Every investor classified as the ground truth says; returns the findings."""
    rows = rows_by_investor(doc)
    truth = old.truth()
    wrong = {k: (rows[k]["finding"], v.value) for k, v in truth.items() if rows[k]["finding"] != v}
    assert not wrong, f"{len(wrong)} investors misclassified: {list(wrong.items())[:5]}"
    unmatched = {
        (r["tokenization_id"], r["wallet"]): int(r["paid"])
        for r in doc["rows"]
        if r["finding"] == "unmatched"
    }
    assert unmatched == {k: v * UNIT for k, v in old.unmatched().items()}
    # Each transfer counted once: the rows' transfers are all of them, and distinct.
    seen = [(t["tx_hash"], t["log_index"]) for r in doc["rows"] for t in r["transfers"]]
    assert len(seen) == len(set(seen)) == len(old.transfers)
    assert sum(int(r["paid"]) for r in doc["rows"]) == sum(t.tokens for t in old.transfers) * UNIT
    return Counter(v.value for v in truth.values())


async def test_audit_classifies_every_investor_as_the_ground_truth(
    settings: Settings, legacy_dsn: str, tmp_path: Path
) -> None:
    rpc_url, _ = settings.require_chain()
    treasury = Account.create()
    await harness.fund(rpc_url, treasury.address)
    wallets = await OldWallets.funded(rpc_url)
    tokens = {
        tk: await history.deploy_token(rpc_url, treasury, 10**30) for tk in ("tok-a", "tok-b")
    }
    await history.fund_wallets(rpc_url, treasury, tokens.values(), wallets, 10**28)
    old = OldSystem(seed=20261, tokenizations=sorted(tokens))
    old.run(users=USERS, investments=INVESTMENTS, wallets=history.fresh_wallets(USERS + 8))
    assert all(old.defects[d] > 0 for d in history.DEFECTS), old.defects
    await history.write_tables(legacy_dsn, old)
    await history.send_transfers(rpc_url, wallets, old, tokens)

    done = tokendist(settings, *audit_args(legacy_dsn, tokens, wallets, tmp_path / "audit"))

    assert done.returncode == 0, done.stderr
    doc = json.loads(await asyncio.to_thread((tmp_path / "audit.json").read_text))
    found = check_against_truth(doc, old)
    assert doc["summary"]["ambiguous_investors"] >= found["ambiguous"] > 0
    assert set(found) == {f.value for f in Finding} - {"unmatched"}
    assert len(old.investments) >= 500
    assert len({u for u, _ in old.truth()}) >= 150
    csv_lines = (await asyncio.to_thread((tmp_path / "audit.csv").read_text)).splitlines()
    assert len(csv_lines) == len(doc["rows"]) + 1
    # The figures the closing note reports (shown with -s).
    print(f"\naudit of the reproduced history: {json.dumps(doc['summary'])}")  # noqa: T201
    print(f"ground truth: {dict(found)}; defects: {dict(old.defects)}")  # noqa: T201


async def test_audit_refuses_bad_input_and_an_outage_in_one_line(
    settings: Settings, legacy_dsn: str, tmp_path: Path
) -> None:
    wallets = OldWallets([Account.create()])
    token = {"tok-a": Account.create().address}
    args = audit_args(legacy_dsn, token, wallets, tmp_path / "a")
    cases = [
        ([*args[:-2], "--old-wallet", "0x123"], 2, "is not an address"),
        ([*args, "--token", f"tok-a={Account.create().address}"], 2, "given twice"),
        ([*args[:3], legacy_dsn.rsplit("/", 1)[0] + "/no_such_db", *args[4:]], 2, "refused"),
        (args, 2, "relation"),  # the old tables are missing: bad input, not an outage
        ([*args[:3], "postgresql://u:secret@127.0.0.1:1/x", *args[4:]], 1, "PostgreSQL"),
    ]
    for argv, code, words in cases:
        done = tokendist(settings, *argv)
        assert done.returncode == code, (argv, done.stderr)
        last = done.stderr.strip().splitlines()[-1]  # argparse prints its usage line first
        assert "error:" in last, done.stderr
        assert words in last, done.stderr
        assert "Traceback" not in done.stderr
        assert "secret" not in done.stderr
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))


async def test_settle_pays_the_underpaid_exactly_once_through_the_pipeline(
    settings: Settings,
    pool: asyncpg.Pool,
    tokenization: Deployment,
    legacy_dsn: str,
    tmp_path: Path,
) -> None:
    rpc_url, deployer_key = settings.require_deployer()
    tk = tokenization
    wallets = await OldWallets.funded(rpc_url)
    deployer = Deployer(rpc_url, deployer_key)
    try:
        for address in wallets.addresses:
            await deployer.fund(tk.token_address, address, 10**28)
    finally:
        await deployer.close()
    old = OldSystem(seed=7, tokenizations=[tk.tokenization_id])
    old.run(users=USERS, investments=INVESTMENTS, wallets=history.fresh_wallets(USERS + 8))
    await history.write_tables(legacy_dsn, old)
    await history.send_transfers(rpc_url, wallets, old, {tk.tokenization_id: tk.token_address})
    tokens = {tk.tokenization_id: tk.token_address}
    assert (
        tokendist(settings, *audit_args(legacy_dsn, tokens, wallets, tmp_path / "a")).returncode
        == 0
    )
    audit_file = str(tmp_path / "a.json")
    doc = json.loads(await asyncio.to_thread(Path(audit_file).read_text))
    check_against_truth(doc, old)
    owed = [r for r in doc["rows"] if r["finding"] in ("never_paid", "underpaid")]
    adoptable = [r for r in doc["rows"] if r["finding"] not in ("ambiguous", "unmatched")]
    written = "SELECT (SELECT count(*) FROM legacy_adoptions) + (SELECT count(*) FROM outbox)"

    dry = tokendist(settings, "legacy", "settle", audit_file, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would top up {len(owed)} investors" in dry.stdout
    assert await pool.fetchval(written) == 0

    crashed = tokendist(
        settings, "legacy", "settle", audit_file, TOKENDIST_FAILPOINTS="legacy_settle:after:25"
    )
    assert crashed.returncode == -signal.SIGKILL
    assert await pool.fetchval("SELECT count(*) FROM legacy_adoptions") == 25

    again = tokendist(settings, "legacy", "settle", audit_file)
    assert again.returncode == 0, again.stderr
    assert "already settled: 25" in again.stdout
    assert await pool.fetchval("SELECT count(*) FROM legacy_adoptions") == len(adoptable)
    outbox = await pool.fetchval("SELECT count(*) FROM outbox")
    assert outbox == len(owed)

    pending = [u.id for u in old.users if u.kyc_status != "approved"]
    async with harness.relay(settings), harness.consumer(settings):
        async with pool.acquire() as conn:
            for user_id in pending:
                if await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id):
                    await approve(conn, user_id, None)
        await harness.wait_until(
            lambda: _credited(pool, len(owed)), timeout=240, what="every top-up credited"
        )
        third = tokendist(settings, "legacy", "settle", audit_file)
        assert third.returncode == 0
        assert f"already settled: {len(adoptable)}" in third.stdout

    assert await pool.fetchval("SELECT count(*) FROM outbox") == outbox
    logs = await harness.paid_to(settings, tk)
    assert len(logs) == len(owed)
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    try:
        for row in adoptable:
            (user,) = row["users"]
            bought = old.bought(user, tk.tokenization_id) * UNIT
            expected = max(bought, int(row["paid"]))  # over-paid: reported, never moved
            assert await chain.token_balance(tk.token_address, row["wallet"]) == expected, row
            holding = await pool.fetchval(
                "SELECT coalesce(sum(balance), 0) FROM token_holdings WHERE user_id = $1", user
            )
            assert int(holding) == expected, row
    finally:
        await chain.close()
    report = await harness.run_verify(settings, pool)
    assert report.ok, report.render()


async def _credited(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n
