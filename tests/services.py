"""Where the integration tests find PostgreSQL, Kafka and anvil.

1. ``TOKENDIST_DATABASE_URL``, ``TOKENDIST_KAFKA_BOOTSTRAP``, ``TOKENDIST_RPC_URL`` from
   the environment (``eval "$(tokendist stack env)"``; ``make test`` sets them);
2. else, where a Docker engine answers, containers started with testcontainers;
3. else the test fails with instructions. Never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from eth_account import Account
from pydantic import SecretStr

from tokendist.core.settings import Settings

HOW_TO_START = (
    "integration tests need PostgreSQL, Apache Kafka and anvil. Start the local stack and "
    'export its addresses:\n    make stack-up && eval "$(.venv/bin/tokendist stack env)"\n'
    "or run `make test`, which does both."
)


@dataclass(frozen=True)
class Services:
    database_url: str
    kafka_bootstrap: str
    rpc_url: str


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


@contextmanager
def _containers() -> Iterator[Services]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with ExitStack() as stack:
        pg = stack.enter_context(PostgresContainer("postgres:16", driver=None))
        kafka = stack.enter_context(KafkaContainer("apache/kafka:4.1.1").with_kraft())
        anvil = stack.enter_context(
            DockerContainer("ghcr.io/foundry-rs/foundry:v1.3.5")
            .with_command("anvil --host 0.0.0.0 --block-time 0.25")
            .with_exposed_ports(8545)
        )
        wait_for_logs(anvil, "Listening on")
        yield Services(
            database_url=pg.get_connection_url(),
            kafka_bootstrap=kafka.get_bootstrap_server(),
            rpc_url=f"http://{anvil.get_container_host_ip()}:{anvil.get_exposed_port(8545)}",
        )


@contextmanager
def services() -> Iterator[Services]:
    names = ("TOKENDIST_DATABASE_URL", "TOKENDIST_KAFKA_BOOTSTRAP", "TOKENDIST_RPC_URL")
    values = [os.environ.get(n) for n in names]
    if all(values):
        yield Services(*values)  # type: ignore[arg-type]
        return
    if _docker_available():
        with _containers() as found:
            yield found
        return
    missing = ", ".join(n for n, v in zip(names, values, strict=True) if not v)
    pytest.fail(f"{missing} not set and no Docker engine. {HOW_TO_START}", pytrace=False)


def settings_for_tests(
    database_url: str, kafka_bootstrap: str, rpc_url: str, *, name: str, **overrides: object
) -> Settings:
    """Settings for one test or run: fresh operator and deployer keys, a topic and group of
    its own (``name``), four partitions, and timings short enough for tests: a crashed
    member's partitions move after 6 s, waits back off from 0.1 s up to 2 s."""
    operator, deployer = Account.create(), Account.create()
    options: dict[str, object] = {
        "database_url": database_url,
        "kafka_bootstrap": kafka_bootstrap,
        "rpc_url": rpc_url,
        "operator_key": SecretStr("0x" + bytes(operator.key).hex()),
        "deployer_key": SecretStr("0x" + bytes(deployer.key).hex()),
        "topic": f"payments.{name}",
        "consumer_group": f"distributor.{name}",
        "topic_partitions": 4,
        "session_timeout_ms": 6_000,
        "relay_poll_interval_s": 0.2,
        "retry_base_s": 0.1,
        "retry_cap_s": 2.0,
        "resubmit_interval_s": 1.0,
        "shutdown_grace_s": 5.0,
        **overrides,
    }
    return Settings.model_validate(options)
