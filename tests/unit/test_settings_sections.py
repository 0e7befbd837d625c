"""Each long-running component is handed only its own section of the settings."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretStr

from tokendist.core.settings import (
    ConsumerSettings,
    RelaySettings,
    Settings,
    WebhookSettings,
)

SECRETS = {"operator_key", "deployer_key", "paystack_secret_key", "checkout_api_key"}


def everything() -> Settings:
    return Settings(
        database_url="postgresql://u:p@db/x",
        kafka_bootstrap="k:9092",
        rpc_url="http://node:8545",
        operator_key=SecretStr("0x" + "11" * 32),
        deployer_key=SecretStr("0x" + "22" * 32),
        paystack_secret_key=SecretStr("sk_live_secret"),
        checkout_api_key=SecretStr("checkout"),
        topic="payments.x",
        partition_window=4,
        relay_batch_size=7,
        webhook_port=9999,
    )


@pytest.mark.parametrize(
    ("section", "kind", "holds"),
    [
        ("consumer", ConsumerSettings, {"operator_key"}),
        ("relay", RelaySettings, set()),
        ("webhook", WebhookSettings, {"paystack_secret_key", "checkout_api_key"}),
    ],
)
def test_a_section_holds_its_own_secrets_and_no_other(
    section: str, kind: type[BaseModel], holds: set[str]
) -> None:
    part = getattr(everything(), section)()
    assert type(part) is kind
    assert SECRETS & set(type(part).model_fields) == holds
    for name in holds:
        assert getattr(part, name) == getattr(everything(), name)


def test_sections_carry_the_values_read() -> None:
    s = everything()
    assert (s.consumer().topic, s.consumer().partition_window) == ("payments.x", 4)
    assert s.consumer().dlq_topic == "payments.x.dlq"
    assert s.relay().relay_batch_size == 7
    assert s.webhook().webhook_port == 9999
    assert not hasattr(s.relay(), "partition_window")


def test_every_section_field_is_a_variable_of_the_whole() -> None:
    """The variables stay flat: a field of a section is read from TOKENDIST_<FIELD>."""
    for kind in (ConsumerSettings, RelaySettings, WebhookSettings):
        assert set(kind.model_fields) <= set(Settings.model_fields), kind.__name__
