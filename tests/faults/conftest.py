"""The integration fixtures (isolated database, topic, group, keys, contracts), imported
rather than copied: pytest only looks for fixtures in the conftest files above a test."""

from tests.integration.conftest import (
    database_url,
    pool,
    settings,
    stack,
    template_db,
    tokenization,
)

__all__ = ["database_url", "pool", "settings", "stack", "template_db", "tokenization"]
