"""``tokendist db migrate`` applies the component roles' grants (tokendist/core/grants.sql)
on the regular stack too: idempotently, converging on the file, covering every table."""

from __future__ import annotations

import re

import asyncpg

from tokendist.core import db

ROLES = ("tokendist_webhook", "tokendist_relay", "tokendist_consumer", "tokendist_operator")

GRANTS = """
SELECT r.rolname, c.relname, p.privilege
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
CROSS JOIN pg_roles r
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(privilege)
WHERE c.relkind = 'r' AND r.rolname = ANY($1::text[])
  AND has_table_privilege(r.rolname, c.oid, p.privilege)
ORDER BY 1, 2, 3
"""


async def _grants(conn: asyncpg.Connection) -> set[tuple[str, str, str]]:
    return {(r[0], r[1], r[2]) for r in await conn.fetch(GRANTS, list(ROLES))}


async def test_migrate_applies_the_grants_idempotently_and_converges(database_url: str) -> None:
    async with db.connect(database_url) as conn:
        before = await _grants(conn)
        # A privilege granted by hand (or left by an older grants.sql) goes at the next run.
        await conn.execute("GRANT UPDATE ON token_holdings, outbox TO tokendist_webhook")
        assert await db.migrate(conn) == []
        assert await db.migrate(conn) == []
        after = await _grants(conn)
    assert after == before
    assert ("tokendist_webhook", "outbox", "INSERT") in after
    assert ("tokendist_webhook", "token_holdings", "UPDATE") not in after
    assert ("tokendist_webhook", "distributions", "SELECT") not in after
    assert ("tokendist_relay", "outbox", "DELETE") in after
    assert {t for r, t, _ in after if r == "tokendist_relay"} == {"outbox"}
    assert ("tokendist_consumer", "distributions", "UPDATE") in after
    assert not {(t, p) for r, t, p in after if r == "tokendist_consumer"} & {
        ("outbox", "INSERT"),
        ("outbox", "UPDATE"),
        ("payment_confirmations", "UPDATE"),
        ("provider_payments", "UPDATE"),
    }
    # Nothing is deleted but what the relay prunes, the consumer's own retry reports and
    # the chain check's missing payouts once they are back.
    assert {(r, t) for r, t, p in after if p in {"DELETE", "TRUNCATE"}} == {
        ("tokendist_relay", "outbox"),
        ("tokendist_consumer", "retrying_partitions"),
        ("tokendist_operator", "credited_not_on_chain"),
    }


async def test_every_table_is_granted_in_grants_sql(database_url: str) -> None:
    """A table added by a migration must be given to the roles that use it: a component
    running as its own role would otherwise fail on it in production only."""
    named = set(re.findall(r"[a-z_0-9]+", db.grants_sql()))
    async with db.connect(database_url) as conn:
        tables = {
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_migrations'"
            )
        }
    assert tables - named == set()
