"""Operator commands as an operator runs them (``tokendist ...`` in a subprocess): a bad
value is one line and exit 2 with nothing written or deployed; an outage is one line and
exit 1; never a traceback (issue 12, part 6)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import asyncpg
import pytest
from eth_account import Account

from tests.integration import harness
from tokendist.consumer.chain import Chain
from tokendist.core import db, kafka
from tokendist.core.errors import DatabaseUnavailable
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops import kyc
from tokendist.ops.deploy import Deployer, Deployment, deploy_tokenization
from tokendist.ops.redrive import redrive_failed
from tokendist.ops.status import KafkaOffsets, gather
from tokendist.ops.verify import verify

FIXED_ADDRESS = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

pytestmark = pytest.mark.integration

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


async def tokendist(
    settings: Settings,
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **settings.as_env(), **(env or {})}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tokendist.cli", *args],
        env={k: v for k, v in environment.items() if k not in unset},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(run: subprocess.CompletedProcess[str], code: int) -> str:
    assert run.returncode == code, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr[-2000:]
    assert lines[0].startswith("tokendist: error: ")
    return lines[0]


DATABASE_COMMANDS = [
    ["db", "migrate"],
    ["kyc", "approve", "user-1"],
    ["redrive"],
    ["verify"],
    ["reconcile", "--dry-run"],
    ["chain-check", "--once"],
    ["status"],
    ["chain", "deploy", "--tokenization-id", "tok-9", "--property-id", "p"],
    # A fixed address: parameters must be the same in every xdist worker.
    ["chain", "rotate-operator", "--tokenization-id", "tok-9", "--new-operator", FIXED_ADDRESS],
    ["keys", "list"],
    ["keys", "add", FIXED_ADDRESS],
    ["keys", "remove", FIXED_ADDRESS],
]
KAFKA_COMMANDS = [
    ["dlq", "list"],
    ["dlq", "redrive", "--all", "--dry-run"],
    ["replay", "--earliest", "--dry-run"],
    ["status"],
]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
async def test_postgresql_down_is_one_line_and_exit_1(
    settings: Settings, command: list[str]
) -> None:
    closed = f"postgresql://tokendist@{CLOSED}/x"
    run = await tokendist(settings, *command, env={"TOKENDIST_DATABASE_URL": closed})
    assert "is PostgreSQL up" in one_line_error(run, 1)


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=" ".join)
async def test_kafka_down_is_one_line_and_exit_1(settings: Settings, command: list[str]) -> None:
    run = await tokendist(settings, *command, env={"TOKENDIST_KAFKA_BOOTSTRAP": CLOSED})
    assert "is Kafka up" in one_line_error(run, 1)


async def test_the_node_down_is_one_line_and_exit_1(
    settings: Settings, tokenization: Deployment
) -> None:
    run = await tokendist(settings, "verify", env={"TOKENDIST_RPC_URL": f"http://{CLOSED}"})
    assert "is the Ethereum node up" in one_line_error(run, 1)


async def test_deploy_with_fund_over_supply_deploys_nothing(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    rpc_url, key = settings.require_deployer()
    deployer = Account.from_key(key.get_secret_value()).address
    nonce = await harness.rpc(rpc_url, "eth_getTransactionCount", [deployer, "pending"])
    for amounts in (["--fund", "100", "--supply", "10"], ["--supply", "-5"], ["--supply", "0"]):
        run = await tokendist(
            settings, "chain", "deploy", "--tokenization-id", "tok-x", "--property-id", "p",
            *amounts,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
    assert await harness.rpc(rpc_url, "eth_getTransactionCount", [deployer, "pending"]) == nonce
    assert await harness.count(pool, "SELECT count(*) FROM tokenizations") == 0


async def test_kyc_approve_refuses_wallets_that_are_not_an_investors(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    await pool.execute("INSERT INTO users VALUES ('user-1', 'pending', $1)", harness.wallet(1))
    operator = Account.from_key(settings.require_chain()[1].get_secret_value()).address
    refused = {
        "0x" + "00" * 20: "the zero address",
        tokenization.distributor_address: "is a contract of tokenization tok-1",
        tokenization.token_address.lower(): "is a contract of tokenization tok-1",
        operator: "this system's own accounts",
    }
    before = await pool.fetch("SELECT * FROM users ORDER BY id")
    for wallet, says in refused.items():
        run = await tokendist(settings, "kyc", "approve", "user-1", "--wallet", wallet)
        assert run.returncode == 2, run.stderr
        assert says in run.stderr
        assert "Traceback" not in run.stderr
    for user in ("user 1", "user-1'; --", ""):
        run = await tokendist(settings, "kyc", "approve", user, "--wallet", harness.wallet(1))
        assert run.returncode == 2, run.stderr
    assert await pool.fetch("SELECT * FROM users ORDER BY id") == before
    assert await harness.count(pool, "SELECT count(*) FROM outbox") == 0
    assert await harness.count(pool, "SELECT count(*) FROM chain_checks") == 0
    run = await tokendist(settings, "kyc", "approve", "user-1", "--wallet", harness.wallet(2))
    assert run.returncode == 0, run.stderr
    assert await pool.fetchval("SELECT wallet_address FROM users") == harness.wallet(2)


async def test_dlq_commands_on_a_dead_letter_nested_10000_deep(settings: Settings) -> None:
    """``dlq list`` and ``dlq redrive --all --dry-run`` used to end in a RecursionError;
    a position that is no dead letter used to re-drive nothing and exit 0."""
    await kafka.ensure_topics(settings)
    producer = await kafka.start(kafka.producer(settings))
    try:
        deep = b'{"data":' * 10_000 + b"1" + b"}" * 10_000
        headers = [("dlq.reason", b"malformed_json")]
        await producer.send_and_wait(settings.dlq_topic, deep, key=b"k", headers=headers)
    finally:
        await producer.stop()
    for command in (["dlq", "list"], ["dlq", "redrive", "--all", "--dry-run"]):
        run = await tokendist(settings, *command)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "malformed_json" in run.stdout
    assert "would re-drive" in run.stdout
    for position in ("3:999999", "zz"):
        run = await tokendist(settings, "dlq", "redrive", position)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
    assert "no dead letter at 3:999999" in one_line_error(
        await tokendist(settings, "dlq", "redrive", "3:999999"), 2
    )
    assert sum((await harness.end_offsets(settings)).values()) == 0, "nothing re-driven"


async def test_replay_refuses_offsets_that_are_not_there(settings: Settings) -> None:
    await kafka.ensure_topics(settings)
    run = await tokendist(settings, "replay", "--to-offsets", "0:999999")
    assert "offsets outside their partition: 0:999999" in one_line_error(run, 2)
    run = await tokendist(settings, "replay", "--to-offsets", "99:0")
    assert "no such partitions: [99]" in one_line_error(run, 2)
    for bad in (["--to-offsets", "abc"], ["--to-timestamp", "yesterday"]):
        run = await tokendist(settings, "replay", *bad)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
    assert await harness.committed_offsets(settings) == {}


async def test_webhook_on_a_port_in_use_is_one_line_and_exit_2(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = await tokendist(
            settings,
            "webhook",
            env={
                "TOKENDIST_WEBHOOK_PORT": str(port),
                "TOKENDIST_PAYSTACK_SECRET_KEY": "sk_live_" + "ab" * 20,
            },
        )
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(run, 2)


@pytest.mark.parametrize("command", [["reconcile"], ["chain-check", "--once"]], ids=" ".join)
async def test_tools_reading_the_chain_answer_the_node_down_in_one_line(
    settings: Settings, tokenization: Deployment, command: list[str]
) -> None:
    run = await tokendist(settings, *command, env={"TOKENDIST_RPC_URL": f"http://{CLOSED}"})
    # Reads go through the endpoints (failover): each one passed over is logged, as a
    # structured line before the answer.
    logged = [json.loads(line) for line in run.stderr.strip().splitlines()[:-1]]
    assert {entry["event"] for entry in logged} <= {"rpc_endpoint_down"}
    answer = one_line_error(
        subprocess.CompletedProcess(
            run.args, run.returncode, run.stdout, run.stderr.strip().splitlines()[-1]
        ),
        1,
    )
    assert "is the Ethereum node up" in answer


async def test_chain_check_once_answers_in_one_line(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    run = await tokendist(settings, "chain-check", "--once")
    assert run.returncode == 0, run.stderr[-2000:]
    (line,) = run.stdout.strip().splitlines()
    assert line.endswith(": 0 credited checked, 0 not on chain")


async def test_chain_check_holds_no_key_and_reads_past_a_dead_endpoint(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=10**18))
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: credited_one(pool), what="the payment credited")
    run = await tokendist(
        settings,
        "chain-check",
        "--once",
        env={"TOKENDIST_RPC_URL": f"http://{CLOSED}", "TOKENDIST_RPC_URLS": settings.require_rpc()},
        unset=("TOKENDIST_OPERATOR_KEY", "TOKENDIST_OPERATOR_KEYS", "TOKENDIST_DEPLOYER_KEY"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith(": 1 credited checked, 0 not on chain")
    assert '"event": "rpc_endpoint_down"' in run.stderr  # the first endpoint, passed over


async def credited_one(pool: asyncpg.Pool) -> bool:
    return await harness.credited(pool) == 1


async def test_reconcile_dry_run_logs_what_it_would_do_and_writes_nothing(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=10**18))
    await pool.execute("DELETE FROM outbox")  # lost before any relay saw it
    run = await tokendist(settings, "reconcile", "--dry-run", "--grace", "0")
    assert "Traceback" not in run.stderr
    assert "re-driven through the outbox (confirmed, never distributed): 1" in run.stdout
    assert '"event": "reconcile_would_redrive"' in run.stderr
    assert "reconcile_redriven" not in run.stderr
    assert await harness.count(pool, "SELECT count(*) FROM outbox") == 0


async def test_a_connection_lost_under_a_running_tool_is_database_unavailable(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Every tool's statements run through its repository: a backend that goes away under
    a command reaches it as ``DatabaseUnavailable`` (exit 1, the database hint), not as
    asyncpg's own error."""
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    deployer = Deployer(*settings.require_deployer())
    tools: dict[str, Callable[[db.Connection], Awaitable[object]]] = {
        "kyc approve": lambda conn: kyc.approve(conn, "user-1", harness.wallet(1)),
        "redrive": lambda conn: redrive_failed(conn, None),
        "verify": lambda conn: verify(conn, chain),
        "status": lambda conn: gather(conn, KafkaOffsets(settings), None),
        "chain deploy": lambda conn: deploy_tokenization(
            deployer, conn, tokenization_id="tok-2", property_id="p", operator=FIXED_ADDRESS,
            name="T", symbol="T", decimals=18, supply=10**18,
        ),
    }  # fmt: skip
    try:
        for tool in tools.values():
            async with db.connect(settings.database_url) as conn:
                pid = conn.get_server_pid()
                await pool.execute("SELECT pg_terminate_backend($1)", pid)
                await harness.wait_until(partial(_gone, pool, pid), what=f"backend {pid} gone")
                with pytest.raises(DatabaseUnavailable):
                    await tool(conn)
    finally:
        await deployer.close()
        await chain.close()
    assert await harness.count(pool, "SELECT count(*) FROM tokenizations") == 1


async def _gone(pool: asyncpg.Pool, pid: int) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
