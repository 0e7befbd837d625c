"""Fixtures over the secured stack (``stack/stack.sh up --secure``): Kafka on SASL_SSL with
SCRAM-SHA-512 and ACLs, each component its own principal.

The base ``settings`` are the stack's ``admin`` (a super user, for setting up and looking);
``as_principal`` gives the same settings as relay, consumer or operator. The tests use the
stack's own topic and group, the ones its ACLs name, so they run one at a time and never
assume the topic is empty. Without the secured stack they fail, saying how to start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from tests.integration import harness
from tests.integration.conftest import (  # noqa: F401 -- fixtures, found by name
    database_url,
    pool,
    stack,
    template_db,
    tokenization,
)
from tests.services import Services, settings_for_tests
from tokendist.core.settings import Settings

PRINCIPALS = ("relay", "consumer", "operator")
HOW_TO_START = (
    "the secured stack is not running or not in the environment: `make test-secured`, or "
    "export TOKENDIST_STACK_HOME=$PWD/.stack-secure (and private TOKENDIST_*_PORT values), "
    'run `bash stack/stack.sh up --secure` and `eval "$(bash stack/stack.sh env)"`'
)

Principal = Callable[[str], Settings]


@pytest.fixture(scope="session", autouse=True)
def secured_stack() -> None:
    wanted = [f"TOKENDIST_SECURE_{p.upper()}_PASSWORD" for p in PRINCIPALS]
    if os.environ.get("TOKENDIST_KAFKA_SECURITY_PROTOCOL") != "SASL_SSL" or not all(
        os.environ.get(name) for name in wanted
    ):
        pytest.fail(HOW_TO_START, pytrace=False)


@pytest.fixture
async def settings(stack: Services, database_url: str) -> Settings:  # noqa: F811 -- the imported fixtures
    """The stack's admin on the stack's topic and group, with fresh funded chain keys."""
    settings = settings_for_tests(
        database_url,
        stack.kafka_bootstrap,
        stack.rpc_url,
        name=uuid.uuid4().hex[:12],
        topic=os.environ.get("TOKENDIST_TOPIC", "payments.confirmed"),
        consumer_group=os.environ.get("TOKENDIST_CONSUMER_GROUP", "tokendist-distributor"),
        topic_partitions=int(os.environ.get("TOKENDIST_TOPIC_PARTITIONS", "16")),
    )
    await harness.fund_keys(settings, stack.rpc_url)
    return settings


@pytest.fixture
def as_principal(settings: Settings) -> Principal:
    """``settings`` signed in as one of the stack's principals (relay, consumer, operator)."""

    def signed_in(name: str) -> Settings:
        password = os.environ[f"TOKENDIST_SECURE_{name.upper()}_PASSWORD"]
        return settings.model_copy(
            update={"kafka_username": name, "kafka_password": SecretStr(password)}
        )

    return signed_in
