"""The SQL producer API (migration 0007) against the Python one, on real PostgreSQL.

``enqueue_payment_confirmed`` must accept exactly what ``outbox.enqueue`` accepts (the
``PaymentConfirmedV1`` schema) and write what the consumer reads back as the same event;
an input one accepts and the other refuses is a payment either lost or parked."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.integration import harness
from tokendist.core import db
from tokendist.outbox import enqueue
from tokendist.schemas import PaymentConfirmedV1, parse_event

pytestmark = pytest.mark.integration

CASES = 1000
ENQUEUE = (
    "SELECT * FROM enqueue_payment_confirmed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
READ_BACK = """
SELECT c.payload::text AS confirmed, o.payload::text AS published, o.headers::text AS headers
FROM payment_confirmations c JOIN outbox o ON o.payload ->> 'event_id' = c.event_id::text
WHERE c.event_id = $1
"""


@dataclass(frozen=True)
class Case:
    user_id: str | None
    investment_id: str | None
    tokenization_id: str | None
    property_id: str | None
    tokens: str | None
    amount_minor: int | None
    currency: str | None
    wallet_address: str | None
    provider: str | None
    provider_reference: str | None
    occurred_at: datetime | None
    event_id: uuid.UUID


@dataclass(frozen=True)
class Accepted:
    event: PaymentConfirmedV1
    published: str
    headers: str


@dataclass(frozen=True)
class Refused:
    fields: frozenset[str]  # the schema paths named, e.g. "data.tokens"


def valid_case(**changes: Any) -> Case:
    fields: dict[str, Any] = {
        "user_id": "user-1",
        "investment_id": "inv-1",
        "tokenization_id": "tok-1",
        "property_id": "prop-1",
        "tokens": str(10**18),
        "amount_minor": 50_000,
        "currency": "NGN",
        "wallet_address": harness.wallet(0),
        "provider": "paystack",
        "provider_reference": "PSK-1",
        "occurred_at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        "event_id": uuid.uuid4(),
    }
    return Case(**{**fields, **changes})


def near(*examples: Any) -> st.SearchStrategy[Any]:
    """Values just off the schema (boundaries, wrong characters), missing ones, any text."""
    return st.none() | st.sampled_from(examples) | st.text(max_size=70)


RAW_ADDRESSES = st.binary(min_size=20, max_size=20).map(to_checksum_address)


def flip_one_letter(address: str, at: int) -> str:
    letters = [i for i, c in enumerate(address) if i > 1 and c.isalpha()]
    if not letters:
        return address.lower()
    i = letters[at % len(letters)]
    return address[:i] + address[i].swapcase() + address[i + 1 :]


IDENTIFIER = (
    st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    near("", "a" * 64, "a" * 65, "a b", "a\n", "\u00e9", "a/b", "a\x00"),
)
# (valid, near-invalid) values of every field.
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "user_id": IDENTIFIER,
    "investment_id": IDENTIFIER,
    "tokenization_id": IDENTIFIER,
    "property_id": IDENTIFIER,
    "tokens": (
        st.integers(1, 2**256 - 1).map(str),
        st.integers(-5, 2**256 + 5).map(str)
        | st.text(alphabet="0123456789", max_size=90)
        | near("0", "00", "01", "+1", " 1", "1 ", "1e3", "1.0", "\u0661", str(2**256)),
    ),
    "amount_minor": (
        st.integers(1, 2**53 - 1),
        st.none() | st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**53]),
    ),
    "currency": (
        st.from_regex(r"[A-Z]{3}", fullmatch=True),
        near("ngn", "NGNN", "NG", "NG1"),
    ),
    "wallet_address": (
        st.none() | RAW_ADDRESSES,
        RAW_ADDRESSES.map(str.lower)
        | RAW_ADDRESSES.map(lambda a: "0x" + a[2:].upper())
        | RAW_ADDRESSES.map(lambda a: "0X" + a[2:])
        | RAW_ADDRESSES.map(lambda a: a[:-1])
        | st.builds(flip_one_letter, RAW_ADDRESSES, st.integers(0, 39))
        | near("0x", "0x" + "0" * 40, "0x" + "g" * 40),
    ),
    "provider": (
        st.from_regex(r"[a-z][a-z0-9_]{1,31}", fullmatch=True),
        near("a", "Paystack", "a" * 33, "a" * 32, "pay-stack", "_a"),
    ),
    "provider_reference": (
        st.from_regex(r"[!-~]{1,128}", fullmatch=True),
        near("", "a" * 128, "a" * 129, "a b", "\u00e9"),
    ),
    # Years 1 to 9999 in any offset: what both a Python datetime and asyncpg's conversion
    # to timestamptz can carry. Instants past that are refused by SQL alone (tested below).
    "occurred_at": (
        st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.sampled_from(
                [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
            ),
        ),
        st.none(),
    ),
}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A valid payment with up to three of its fields replaced by near-invalid values."""
    fields = {name: draw(valid) for name, (valid, _) in FIELDS.items()}
    for name in draw(st.sets(st.sampled_from(list(FIELDS)), max_size=3)):
        fields[name] = draw(FIELDS[name][1])
    return Case(**fields, event_id=draw(st.uuids()))


def schema_path(loc: tuple[int | str, ...]) -> str:
    # A union member's tag follows the field ("data.wallet_address.str"): the field is enough.
    return ".".join(str(p) for p in loc[:2]) if loc[0] == "data" else str(loc[0])


async def read_back(conn: db.Connection, event_id: uuid.UUID) -> Accepted:
    row = await conn.fetchrow(READ_BACK, event_id)
    assert row is not None
    assert row["confirmed"] == row["published"]  # the authority check compares these
    return Accepted(parse_event(row["published"].encode()), row["published"], row["headers"])


async def through_python(conn: db.Connection, case: Case) -> Accepted | Refused:
    fields = asdict(case)
    doc = {"event_id": fields.pop("event_id"), "occurred_at": fields.pop("occurred_at")}
    try:
        ev = PaymentConfirmedV1.model_validate({**doc, "data": fields}, strict=True)
    except ValidationError as exc:
        return Refused(frozenset(schema_path(e["loc"]) for e in exc.errors()))
    tx = conn.transaction()
    await tx.start()
    try:
        assert (await enqueue(conn, ev)).created
        return await read_back(conn, ev.event_id)
    finally:
        await tx.rollback()


async def through_sql(conn: db.Connection, case: Case) -> Accepted | Refused:
    tx = conn.transaction()
    await tx.start()
    try:
        row = await conn.fetchrow(ENQUEUE, *asdict(case).values())
        assert row is not None
        assert (row["event_id"], row["created"]) == (case.event_id, True)
        return await read_back(conn, case.event_id)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "TD001":
            return Refused(frozenset({exc.column_name or ""}))
        # A text value cannot carry NUL: the server refuses it before the function runs.
        if exc.sqlstate == "22021" and any("\x00" in str(v) for v in asdict(case).values()):
            return Refused(frozenset())
        raise
    finally:
        await tx.rollback()


async def compare(conn: db.Connection, case: Case) -> str:
    python, sql = await through_python(conn, case), await through_sql(conn, case)
    if isinstance(python, Refused):
        assert isinstance(sql, Refused), f"SQL accepted what Python refuses: {python}"
        assert sql.fields <= python.fields, f"SQL names {sql.fields}, Python {python.fields}"
        return "refused " + ",".join(sorted(python.fields))
    assert isinstance(sql, Accepted), f"SQL refused what Python accepts: {sql}"
    assert sql.event == python.event  # field by field, times as instants
    assert sql.headers == python.headers
    if case.occurred_at is not None and case.occurred_at.utcoffset() == timedelta(0):
        assert sql.published == python.published  # the very bytes the relay publishes
    return "accepted"


@given(case=cases())
@settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_python_and_sql_accept_and_refuse_the_same_inputs(
    case: Case, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        outcome = await compare(conn, case)
    event(outcome.split(" ")[0])
    event(outcome)


CHECKSUMMED = harness.wallet(3)


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ({}, True),
        ({"wallet_address": None}, True),
        ({"wallet_address": CHECKSUMMED.lower()}, False),
        ({"wallet_address": flip_one_letter(CHECKSUMMED, 0)}, False),
        ({"tokens": str(2**256 - 1)}, True),
        ({"tokens": str(2**256)}, False),
        ({"tokens": "0"}, False),
        ({"tokens": "007"}, False),
        ({"amount_minor": 2**53 - 1}, True),
        ({"amount_minor": 2**53}, False),
        ({"amount_minor": 0}, False),
        ({"user_id": "u" * 64}, True),
        ({"user_id": "u" * 65}, False),
        ({"provider_reference": "r" * 128}, True),
        ({"provider_reference": "r" * 129}, False),
        ({"provider": "ab"}, True),
        ({"provider": "a"}, False),
        ({"currency": "ngn"}, False),
        ({"occurred_at": None}, False),
        ({"occurred_at": datetime(2026, 1, 1, 12, 0, 0, 500, tzinfo=UTC)}, True),
    ],
)
async def test_boundaries_are_the_same(
    pool: asyncpg.Pool, change: dict[str, Any], accepted: bool
) -> None:
    async with pool.acquire() as conn:
        assert (await compare(conn, valid_case(**change)) == "accepted") is accepted


@pytest.mark.parametrize(
    "occurred_at", ["infinity", "-infinity", "10000-01-01 00:00:00Z", "0001-12-31 23:59:59Z BC"]
)
async def test_times_no_python_datetime_holds_are_refused(
    pool: asyncpg.Pool, occurred_at: str
) -> None:
    case = asdict(valid_case())
    case["occurred_at"] = occurred_at
    with pytest.raises(asyncpg.PostgresError, match="invalid_schema: occurred_at") as caught:
        await pool.fetchrow(ENQUEUE.replace("$11", "$11::text::timestamptz"), *case.values())
    assert caught.value.sqlstate == "TD001"
    assert await harness.count(pool, "SELECT count(*) FROM payment_confirmations") == 0


async def sql_enqueue(pool: asyncpg.Pool, case: Case) -> tuple[uuid.UUID, bool]:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(ENQUEUE, *asdict(case).values())
        assert row is not None
        return row["event_id"], row["created"]


async def test_sql_dedupes_like_enqueue(pool: asyncpg.Pool) -> None:
    first = valid_case()
    assert await sql_enqueue(pool, first) == (first.event_id, True)
    again = await asyncio.gather(*(sql_enqueue(pool, valid_case()) for _ in range(5)))
    assert again == [(first.event_id, False)] * 5
    other_reference = valid_case(provider_reference="PSK-2")
    assert await sql_enqueue(pool, other_reference) == (first.event_id, False)
    assert await harness.count(pool, "SELECT count(*) FROM outbox") == 1
    assert await harness.count(pool, "SELECT count(*) FROM payment_confirmations") == 1


async def test_an_event_id_of_another_payment_is_refused(pool: asyncpg.Pool) -> None:
    first = valid_case()
    await sql_enqueue(pool, first)
    clash = valid_case(investment_id="inv-2", provider_reference="PSK-2", event_id=first.event_id)
    with pytest.raises(asyncpg.PostgresError, match="event_id_taken") as caught:
        await sql_enqueue(pool, clash)
    assert caught.value.sqlstate == "TD002"
    assert await harness.count(pool, "SELECT count(*) FROM outbox") == 1


async def test_only_granted_roles_may_confirm_payments(pool: asyncpg.Pool) -> None:
    public_may = await pool.fetchval(
        "SELECT has_function_privilege('public', 'enqueue_payment_confirmed("
        "text,text,text,text,text,bigint,text,text,text,text,timestamptz,uuid)', 'EXECUTE')"
    )
    assert public_may is False


@given(message=st.binary(max_size=400))
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
async def test_the_sql_keccak_and_checksum_are_ethereums(
    pool: asyncpg.Pool, message: bytes
) -> None:
    assert await pool.fetchval("SELECT tokendist_keccak256($1)", message) == keccak(message)
    address = to_checksum_address(message[:20].rjust(20, b"\x00"))
    assert await pool.fetchval("SELECT tokendist_checksum_address($1)", address.lower()) == address
