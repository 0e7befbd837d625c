"""The command line's one error boundary: any exception a command ends with becomes one
line on stderr and an exit code, never a traceback.

    exit 2  the request is refused as asked (SettingsError, InvalidInput, any other
            TokendistError, a database that is not ours: unknown, unmigrated, refusing
            our credentials or our role's privileges); asking again will not help
    exit 1  a dependency is down (TransientError, and the raw asyncpg, aiokafka, aiohttp
            and socket errors of tool calls that reach a service without an adapter's
            mapping); the same command succeeds once it is back
    exit 1  anything unexpected: the type and a short message, the traceback in the log
            at DEBUG
    130     interrupted

Secrets never reach the line: every secret value the settings hold is masked out of it.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
import asyncpg
import structlog
from aiokafka.errors import KafkaError

from tokendist.core.db import CONNECTION_ERRORS as DATABASE_CONNECTION_ERRORS
from tokendist.core.errors import (
    BrokerRefused,
    BrokerUnavailable,
    ChainUnavailable,
    DatabaseUnavailable,
    ProviderUnavailable,
    SignerUnavailable,
    TokendistError,
    TransientError,
)
from tokendist.core.settings import SettingsError

log = structlog.get_logger("tokendist.cli")

BAD_INPUT = 2
OUTAGE = 1
INTERRUPTED = 130
MAX_DETAIL_CHARS = 300

DATABASE_HINT = "is PostgreSQL up at TOKENDIST_DATABASE_URL?"
KAFKA_HINT = "is Kafka up at TOKENDIST_KAFKA_BOOTSTRAP, taking the TOKENDIST_KAFKA_* credentials?"
KAFKA_REFUSED_HINT = "check TOKENDIST_KAFKA_USERNAME's password and the ACLs of its principal"
UNEXPECTED_HINT = "--log-level DEBUG shows where"

# asyncpg's own connection errors; a bare OSError may come from any service.
_DATABASE_DOWN = tuple(e for e in DATABASE_CONNECTION_ERRORS if not issubclass(e, OSError))

# First match wins: (exception types, exit code, hint).
RULES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int, str], ...] = (
    (KeyboardInterrupt, INTERRUPTED, ""),
    (DatabaseUnavailable, OUTAGE, DATABASE_HINT),
    (BrokerRefused, OUTAGE, KAFKA_REFUSED_HINT),
    (BrokerUnavailable, OUTAGE, KAFKA_HINT),
    (ChainUnavailable, OUTAGE, "is the Ethereum node up at TOKENDIST_RPC_URL?"),
    (ProviderUnavailable, OUTAGE, "is the payment provider's API reachable?"),
    (SignerUnavailable, OUTAGE, "is KMS reachable at TOKENDIST_KMS_ENDPOINT_URL?"),
    (TransientError, OUTAGE, "try again later"),
    ((SettingsError, TokendistError), BAD_INPUT, ""),
    # The database answered, and its answer is about our configuration, not an outage.
    (asyncpg.InvalidCatalogNameError, BAD_INPUT, "check the database in TOKENDIST_DATABASE_URL"),
    (asyncpg.InvalidAuthorizationSpecificationError, BAD_INPUT, "check TOKENDIST_DATABASE_URL"),
    (asyncpg.InvalidPasswordError, BAD_INPUT, "check TOKENDIST_DATABASE_URL's password"),
    (asyncpg.ClientConfigurationError, BAD_INPUT, "check TOKENDIST_DATABASE_URL"),
    (asyncpg.UndefinedTableError, BAD_INPUT, "run `tokendist db migrate` first"),
    (
        asyncpg.InsufficientPrivilegeError,
        BAD_INPUT,
        "the role in TOKENDIST_DATABASE_URL may not do this (README: PostgreSQL roles)",
    ),
    (_DATABASE_DOWN, OUTAGE, DATABASE_HINT),
    (KafkaError, OUTAGE, KAFKA_HINT),
    ((aiohttp.ClientError, OSError), OUTAGE, "is the service it names up?"),
)


def classify(exc: BaseException) -> tuple[int, str, str]:
    """(exit code, what happened, what to do) for the exception a command ended with."""
    rule = next(((code, hint) for kinds, code, hint in RULES if isinstance(exc, kinds)), None)
    if rule is None:
        return OUTAGE, f"unexpected {type(exc).__name__}: {exc}", UNEXPECTED_HINT
    code, hint = rule
    if isinstance(exc, KeyboardInterrupt):
        return code, "interrupted", hint
    ours = isinstance(exc, SettingsError | TokendistError) and code == BAD_INPUT
    return code, str(exc) if ours else f"{type(exc).__name__}: {exc}", hint


def one_line(exc: BaseException, secrets: Iterable[str] = ()) -> tuple[int, str]:
    """The exit code and the one line to print for ``exc``, secrets masked."""
    code, what, hint = classify(exc)
    if hint == UNEXPECTED_HINT:
        log.debug("command_failed", exc_info=exc)
    for secret in secrets:
        if secret:
            what = what.replace(secret, "***")
    what = " ".join(what.split())
    if len(what) > MAX_DETAIL_CHARS:
        what = what[: MAX_DETAIL_CHARS - 1] + "…"
    return code, f"tokendist: error: {what}" + (f"; {hint}" if hint else "")
