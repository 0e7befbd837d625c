"""Kafka's connection settings: what each security protocol needs, the options every client
is built with (``tokendist.core.kafka.connection``), and the password kept out of sight."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import certifi
import pytest

from tokendist.cli import errors as cli_errors
from tokendist.core import kafka
from tokendist.core.errors import BrokerRefused
from tokendist.core.settings import Settings, SettingsError, load_settings, secret_values

BASE = {"database_url": "postgresql://x", "kafka_bootstrap": "a:9093,b:9093"}
PASSWORD = "pw-s3cret"  # noqa: S105 -- a test value, the one that must never show


def secured(**changes: object) -> Settings:
    options = {
        **BASE,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_username": "relay",
        "kafka_password": PASSWORD,
        "kafka_ca_file": certifi.where(),
    }
    return load_settings(**{**options, **changes})


def test_plaintext_is_the_default_and_carries_no_tls_or_sasl() -> None:
    options = kafka.connection(load_settings(**BASE))
    assert options == {"bootstrap_servers": ["a:9093", "b:9093"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_verifies_the_broker_and_signs_in() -> None:
    options = kafka.connection(secured())
    context = options.pop("ssl_context")
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert options == {
        "bootstrap_servers": ["a:9093", "b:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "relay",
        "sasl_plain_password": PASSWORD,
    }


def test_managed_kafka_settings_plain_over_tls_with_the_system_cas() -> None:
    options = kafka.connection(secured(kafka_sasl_mechanism="PLAIN", kafka_ca_file=None))
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "ssl_context" not in kafka.connection(secured(kafka_security_protocol="SASL_PLAINTEXT"))


def test_hostname_checking_can_be_turned_off_but_not_verification() -> None:
    context = kafka.connection(secured(kafka_check_hostname=False))["ssl_context"]
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"kafka_password": None}, "needs TOKENDIST_KAFKA_USERNAME and TOKENDIST_KAFKA_PASSWORD"),
        ({"kafka_username": None}, "needs TOKENDIST_KAFKA_USERNAME and TOKENDIST_KAFKA_PASSWORD"),
        ({"kafka_cert_file": "/c.pem"}, "set both TOKENDIST_KAFKA_CERT_FILE"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "TOKENDIST_KAFKA_SASL_MECHANISM"),
        ({"kafka_security_protocol": "TLS"}, "TOKENDIST_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_incomplete_security_settings_name_what_to_set(
    changes: dict[str, object], says: str
) -> None:
    with pytest.raises(SettingsError, match=says) as caught:
        secured(**changes)
    assert PASSWORD not in str(caught.value)


def test_an_unreadable_ca_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TOKENDIST_KAFKA_CA_FILE"):
        kafka.connection(secured(kafka_ca_file=str(tmp_path / "missing.pem")))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(SettingsError, match="TOKENDIST_KAFKA_CA_FILE"):
        kafka.connection(secured(kafka_ca_file=str(tmp_path / "bad.pem")))


async def test_every_client_is_built_with_the_connection_settings() -> None:
    settings = secured()
    inner = [
        kafka.producer(settings).client,
        kafka.consumer(settings)._client,
        kafka.admin(settings)._client,
        kafka.client(settings),
    ]
    for client in inner:
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_password == PASSWORD
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_the_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = secured()
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.relay())
    monkeypatch.setenv("TOKENDIST_KAFKA_PASSWORD", PASSWORD)
    secrets = secret_values(os.environ)
    _, line = cli_errors.one_line(BrokerRefused(f"SASL {PASSWORD} refused"), secrets)
    assert PASSWORD not in line
