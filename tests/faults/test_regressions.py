"""Bugs the fault runs found, each pinned as a deterministic test of the behaviour the
design promises, each fixed:

- asyncpg's InternalClientError (a terminated backend) escaped ``db.guarded`` (seed 100);
- two members bumping the same stuck transaction at once crashed one of them (seed 100);
- a transfer that reverted for lack of tokens could never be re-driven (seed 105);
- SIGTERM during a rebalance: two overlapping ``Runner.release`` calls (seed 2008);
- SIGTERM while the broker is unreachable exited 1 instead of 0 (seed 2142).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.partitioner import murmur2

from tests.faults.stack import local_stack
from tests.integration import harness
from tests.services import Services
from tests.unit.test_partition_worker import worker_for
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain, Signed
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.repository import BatchRequest, PaymentToSign, Repository
from tokendist.consumer.resubmitter import Resubmitter
from tokendist.consumer.runner import Runner
from tokendist.core import db, kafka
from tokendist.core.errors import DatabaseUnavailable
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployment
from tokendist.ops.redrive import redrive_failed
from tokendist.sim import payments

GWEI = 10**9


@pytest.mark.integration
async def test_a_connection_the_server_terminated_is_reported_as_database_unavailable(
    stack: Services,
) -> None:
    """``pg_ctl stop -m fast`` terminates every backend. A query sent before asyncpg has
    noticed the socket closing meets a protocol still consuming the FATAL message and
    raises ``InternalClientError``, which ``CONNECTION_ERRORS`` lacks: the relay (which
    retries only ``TransientError``) and the consumers exit instead of waiting."""
    admin = await asyncpg.connect(stack.database_url)
    escaped: list[str] = []
    try:
        for _ in range(40):  # it escapes in about a third of the attempts
            conn = await asyncpg.connect(stack.database_url)
            await admin.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            try:
                await db.guarded(_select_one(conn))
            except DatabaseUnavailable:
                pass  # what the design promises: a transient error, retried
            except Exception as exc:
                escaped.append(type(exc).__name__)
            finally:
                conn.terminate()
    finally:
        await admin.close()
    assert escaped == [], f"not mapped to DatabaseUnavailable: {escaped}"


def _select_one(conn: asyncpg.Connection) -> Callable[[], Awaitable[object]]:
    return lambda: conn.fetchval("SELECT 1")


@contextlib.asynccontextmanager
async def _base_fee_pinned(rpc_url: str, wei: int) -> AsyncIterator[None]:
    """anvil lowers the base fee 12.5 % per empty block; keep setting it."""

    async def pin() -> None:
        while True:
            await harness.rpc(rpc_url, "anvil_setNextBlockBaseFeePerGas", [hex(wei)])
            await asyncio.sleep(0.1)

    task = asyncio.create_task(pin())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _slow_inserts(pool: asyncpg.Pool, seconds: float, investment: str | None) -> None:
    """Hold every (or one investment's batch's) chain_transactions INSERT for a while: a
    stand-in for a slow disk or a GC pause, in this test's own database only. A batch's
    members are marked after its attempt is stored: the payment is found in its calldata."""
    only = "true" if investment is None else f"d.investment_id = '{investment}'"
    await pool.execute(
        f"""
        CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (
                SELECT 1 FROM batches b, distributions d
                WHERE b.id = NEW.batch_id AND {only}
                  AND position(decode(substr(d.payment_id, 3), 'hex') IN b.calldata) > 0
            )
            THEN PERFORM pg_sleep({seconds}); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER slow_insert BEFORE INSERT ON chain_transactions FOR EACH ROW
        EXECUTE FUNCTION slow_insert();
        """
    )


@pytest.mark.integration
@pytest.mark.disruptive  # pins the shared node's base fee for a few seconds
async def test_two_members_fee_bumping_the_same_stuck_transaction_both_survive(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Every member's resubmitter sweeps the operator's stuck transactions. With the same
    stored transaction and the same base fee, two members sign byte-identical
    replacements; the second ``store_attempt`` hits ``chain_transactions_pkey`` and
    the UniqueViolationError, not a TransientError, kills ``Resubmitter.run`` and with it
    the consumer process."""
    rpc_url, key = settings.require_chain()
    eager = settings.model_copy(update={"fee_bump_after_s": 1.0})
    repo = Repository(pool)
    async with _base_fee_pinned(rpc_url, 50 * GWEI):
        # A batch stored under a 10 gwei fee, below the pinned base fee: stuck in 'signed'
        # (a consumer signs nothing while fees are above its cap, so the test stores it
        # as a member that signed just before a fee spike would have).
        await _stuck_batch(settings, repo, tokenization, max_fee=10 * GWEI)
        await asyncio.sleep(1.5)
        await _slow_inserts(pool, 1.0, None)
        chains = [Chain(rpc_url, LocalSigner(key)), Chain(rpc_url, LocalSigner(key))]
        try:
            members = [
                Resubmitter(eager, repo, KeyPool([c], repo, cap=16, poll_s=0.1)) for c in chains
            ]
            results = await asyncio.gather(*(m.sweep() for m in members), return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close() for c in chains))
    crashed = [repr(r) for r in results if isinstance(r, BaseException)]
    assert crashed == [], f"a member's resubmitter died: {crashed}"
    # The premise: the stuck batch was fee-bumped (its first attempt, then one sibling).
    assert await pool.fetchval("SELECT count(*) FROM chain_transactions") == 2


async def _stuck_batch(
    settings: Settings, repo: Repository, tk: Deployment, *, max_fee: int
) -> None:
    """One payment claimed and signed into a batch under ``max_fee``, stored, not sent."""
    rpc_url, key = settings.require_chain()
    p = harness.payment(tk, 1, user=0)
    assert p.wallet_address is not None
    event_id = uuid.uuid4()
    payment_id = "0x" + contracts.payment_id(p.investment_id).hex()
    await repo.claim(
        event_id=event_id, investment_id=p.investment_id, payment_id=payment_id,
        user_id=p.user_id, tokenization_id=tk.tokenization_id, tokens=p.tokens,
        payload="{}", partition=0, offset=0,
    )  # fmt: skip
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        chain_id = await chain.chain_id()
        await repo.register_keys(chain_id, [chain.sender])
        await repo.sync_nonce(chain_id, chain.sender, await chain.nonce(pending=True))
        await repo.index_scan(tk.distributor_address)

        async def sign(nonce: int, first: int, kept: list[PaymentToSign]) -> tuple[Signed, bytes]:
            data = contracts.batch_calldata(
                first, [(bytes.fromhex(x.payment_id[2:]), x.recipient, x.tokens) for x in kept]
            )
            signed = await chain.sign(
                to=tk.distributor_address, data=data, gas=300_000, nonce=nonce,
                max_fee=max_fee, priority_fee=GWEI,
            )  # fmt: skip
            return signed, bytes.fromhex(data[2:])

        payment = PaymentToSign(event_id, payment_id, p.wallet_address, p.tokens)
        request = BatchRequest(chain_id, chain.sender, tk.distributor_address, [payment])
        stored = await repo.sign_batch(request, sign)
        assert stored.batch_id is not None
    finally:
        await chain.close()


async def _state_is(pool: asyncpg.Pool, investment: str, state: str) -> bool:
    return await harness.state_of(pool, investment) == state


def _users_on_two_partitions(partitions: int) -> tuple[int, int]:
    """Two user numbers whose keys land on different partitions (so two workers run)."""
    first = murmur2(b"user-0") & 0x7FFFFFFF
    for u in range(1, 64):
        if (murmur2(f"user-{u}".encode()) & 0x7FFFFFFF) % partitions != first % partitions:
            return 0, u
    raise AssertionError("no second partition found")


@pytest.mark.integration
async def test_a_transfer_reverted_for_lack_of_tokens_is_paid_after_a_top_up(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """The Distributor holds 10**28 and two investors (two partitions) each buy 6*10**27.
    Both simulations pass before either batch is mined; the second batch reverts
    (ERC20InsufficientBalance) and its payment fails *after signing*. A revert rolls back
    the payment's bit, so paying it later is safe, yet ``redrive`` refused anything with
    a sender: after the top-up the investor was never paid."""
    a, b = _users_on_two_partitions(settings.topic_partitions)
    first = harness.payment(tokenization, 1, user=a, tokens=6 * 10**27)
    second = harness.payment(tokenization, 2, user=b, tokens=6 * 10**27)
    async with pool.acquire() as conn:
        for p in (first, second):
            await payments.register_user(conn, p.user_id, p.wallet_address)
    # The first transfer is simulated, then held while the second is simulated too.
    await _slow_inserts(pool, 5.0, first.investment_id)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, first)
        await harness.wait_until(lambda: _sleeping(pool), what="first transfer held")
        await harness.pay(pool, second)
        await harness.wait_until(
            lambda: _state_is(pool, "inv-2", "failed"), timeout=60, what="second one fails"
        )
        reason = await pool.fetchval(
            "SELECT failure_reason FROM distributions WHERE state = 'failed'"
        )
        assert reason.startswith("reverted: batch"), reason  # failed after signing: the premise
        await harness.top_up(settings, tokenization, amount=10**28)
        async with pool.acquire() as conn:
            await redrive_failed(conn, None)
        await harness.wait_until(
            lambda: _state_is(pool, "inv-2", "credited"), timeout=30, what="paid after top-up"
        )


async def _sleeping(pool: asyncpg.Pool) -> bool:
    n = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = "
        "current_database()"
    )
    return bool(n)


async def test_sigterm_during_a_revocation_drains_cleanly() -> None:
    """SIGTERM's ``_shutdown`` and a rebalance's ``on_partitions_revoked`` both call
    ``Runner.release`` for the same partitions while a worker is busy with a slow step
    (in seed 2008: awaiting the receipt of a transaction the node had dropped).

    Both call ``PartitionWorker.stop`` on one worker: when the first caller's grace runs
    out it cancels the task, and the second caller, awaiting ``asyncio.shield`` of that
    task, gets CancelledError (``wait_for`` only catches TimeoutError). Had the step
    finished in time, both callers would ``del self.workers[tp]`` and the second would
    raise KeyError. Either way the consumer exits 1 without committing its finished
    offsets, instead of draining as SIGTERM promises."""
    settings = Settings(
        database_url="postgresql://unused@127.0.0.1:1/unused",
        kafka_bootstrap="127.0.0.1:1",
        shutdown_grace_s=0.2,
    )
    runner = Runner(settings, asyncio.Event())
    started = asyncio.Event()

    async def slow(record: object) -> None:
        started.set()
        await asyncio.sleep(30)  # a step that outlives the grace period

    tp = TopicPartition("payments", 0)
    worker = worker_for(slow, window=4, retry_s=0.1)
    worker.feed([_Record(partition=0, offset=0)])
    runner.workers[tp] = worker
    await started.wait()
    revoked, shutdown = await asyncio.gather(
        runner.release([tp]), runner.release([tp]), return_exceptions=True
    )
    assert (revoked, shutdown) == (None, None)
    assert runner.workers == {}


class _Record:
    def __init__(self, *, partition: int, offset: int) -> None:
        self.partition = partition
        self.offset = offset
        self.key = b"user-1"


@pytest.mark.integration
@pytest.mark.disruptive  # stops the shared broker for a few seconds
async def test_sigterm_while_the_broker_is_down_exits_cleanly(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """The drain ran, but the last exit callback, ``AIOKafkaConsumer.stop``, closes its
    fetcher, whose in-flight fetch tasks it cancels and awaits; their CancelledError came
    back out of ``Fetcher.close`` (aiokafka 0.14) and the process died with a traceback and
    status 1: to a supervisor, a crash on every shutdown during an outage. The relay, its
    producer holding records for the dead broker, hung in ``stop`` (seed 3159)."""
    services = local_stack()
    # Whether a fetch is mid-backoff at that instant is timing (about half the time):
    # eight tries, four members of four groups per outage, so that a still-broken
    # consumer cannot pass by luck.
    codes: list[int] = []
    for outage in range(2):
        groups = [
            settings.model_copy(update={"consumer_group": f"{settings.consumer_group}.{outage}{i}"})
            for i in range(4)
        ]
        members = [harness.Process(g, "consume") for g in groups]
        relay = harness.Process(settings, "relay")
        try:
            for g in groups:
                await harness.wait_until(_joined_check(g), timeout=90, what="joined")
            await harness.wait_until(
                functools.partial(_logged, relay, "relay_leading"), timeout=90, what="leading"
            )
            await services.ctl("stop-service", "kafka")
            # Records the relay cannot deliver; fetches that fail and back off.
            await harness.confirm_payments(pool, tokenization, 5, start=5 * outage)
            await asyncio.sleep(3)
            codes += await asyncio.gather(
                *(asyncio.to_thread(_sigterm, m) for m in [*members, relay])
            )
        finally:
            for m in [*members, relay]:
                if m.alive():
                    m.kill()
            await services.ctl("start-service", "kafka")
    assert codes == [0] * 10


async def _logged(member: harness.Process, event: str) -> bool:
    return event in member.tail(lines=10_000)


def _joined_check(settings: Settings) -> Callable[[], Awaitable[bool]]:
    return lambda: _joined(settings)


async def _joined(settings: Settings) -> bool:
    """The group is Stable: the member joined and holds its partitions."""
    admin = AIOKafkaAdminClient(**kafka.connection(settings))
    await admin.start()
    try:
        answers = await admin.describe_consumer_groups([settings.consumer_group])
    except GroupCoordinatorNotAvailableError:
        return False  # a young broker is still creating __consumer_offsets
    finally:
        await admin.close()
    # DescribeGroups v2 rows: (error_code, group_id, state, protocol_type, protocol, members)
    return any(group[2] == "Stable" for answer in answers for group in answer.groups)


def _sigterm(member: harness.Process) -> int:
    member.proc.send_signal(signal.SIGTERM)
    member.proc.communicate(timeout=60)
    return member.proc.returncode
