"""``TOKENDIST_<NAME>_FILE``: any variable read from a file, as container platforms mount
secrets; both ways at once refused; every secret, wherever it came from, known to
``secret_values`` (what no output may show); each component's own DSN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokendist.core.settings import SettingsError, load_settings, secret_values

DSN = "postgresql://tokendist_webhook:pg-s3cret@db.example:5432/app?sslmode=verify-full"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TOKENDIST_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TOKENDIST_KAFKA_BOOTSTRAP", "k:9092")


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def test_a_secret_is_read_from_its_file_without_the_final_line_break(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL_FILE", secret_file(tmp_path, "dsn", DSN + "\n"))
    monkeypatch.setenv(
        "TOKENDIST_PAYSTACK_SECRET_KEY_FILE", secret_file(tmp_path, "key", "sk_live_abc\r\n")
    )
    monkeypatch.setenv("TOKENDIST_CHECKOUT_API_KEY_FILE", secret_file(tmp_path, "c", "a b\n\n"))
    s = load_settings()
    assert s.database_url == DSN
    key = s.webhook().paystack_secret_key
    assert key is not None
    assert key.get_secret_value() == "sk_live_abc"
    checkout = s.webhook().checkout_api_key
    assert checkout is not None
    assert checkout.get_secret_value() == "a b\n"


def test_a_variable_given_both_ways_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", DSN)
    monkeypatch.setenv("TOKENDIST_DATABASE_URL_FILE", secret_file(tmp_path, "dsn", DSN))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == (
        "set TOKENDIST_DATABASE_URL or TOKENDIST_DATABASE_URL_FILE, not both"
    )


@pytest.mark.parametrize("content", [None, b"\xff\xfe not text"])
def test_an_unreadable_file_is_refused_naming_the_file_not_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None
) -> None:
    path = tmp_path / "operator.key"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", DSN)
    monkeypatch.setenv("TOKENDIST_OPERATOR_KEY_FILE", str(path))
    with pytest.raises(SettingsError, match=f"TOKENDIST_OPERATOR_KEY_FILE: cannot read {path}"):
        load_settings()


def test_every_secret_is_known_wherever_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL_FILE", secret_file(tmp_path, "dsn", DSN))
    monkeypatch.setenv("TOKENDIST_OPERATOR_KEYS", "0xkey-one, 0xkey-two")
    monkeypatch.setenv("TOKENDIST_RPC_URL", "https://rpc-user:rpc-s3cret@node.example/v1")
    monkeypatch.setenv("TOKENDIST_RPC_URLS", "https://node.example,https://u:other-s3cret@n2")
    monkeypatch.setenv(
        "TOKENDIST_RPC_AUTH_HEADER_FILE", secret_file(tmp_path, "h", "X-Api-Key: hdr-s3cret\n")
    )
    monkeypatch.setenv("TOKENDIST_LEGACY_DATABASE_URL", "postgresql://old:legacy-s3cret@old/db")
    found = set(secret_values(os.environ))
    assert {
        "pg-s3cret",
        "0xkey-one",
        "0xkey-two",
        "rpc-s3cret",
        "other-s3cret",
        "hdr-s3cret",
        "legacy-s3cret",
    } <= found
    assert "rpc-user" not in found
    assert "node.example" not in found


def test_the_rpc_auth_header_is_checked_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", DSN)
    monkeypatch.setenv("TOKENDIST_RPC_AUTH_HEADER", "Bearer tok-s3cret")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "TOKENDIST_RPC_AUTH_HEADER" in str(refused.value)
    assert "tok-s3cret" not in str(refused.value)
    monkeypatch.setenv("TOKENDIST_RPC_AUTH_HEADER", "Authorization: Bearer tok-s3cret")
    assert load_settings().rpc_headers() == {"Authorization": "Bearer tok-s3cret"}


def test_each_component_connects_with_its_own_dsn_or_the_common_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://owner@db/app")
    monkeypatch.setenv("TOKENDIST_CONSUMER_DATABASE_URL", "postgresql://tokendist_consumer@db/app")
    s = load_settings()
    assert s.consumer().database_url == "postgresql://tokendist_consumer@db/app"
    assert s.relay().database_url == "postgresql://owner@db/app"
    assert s.webhook().database_url == "postgresql://owner@db/app"
    assert s.database_url == "postgresql://owner@db/app"  # the operator tools'


def test_settings_moved_to_another_database_move_every_components_dsn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A demo or a benchmark in a database of its own: no component may stay behind on the
    stack's database under its own role."""
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://owner:o@db:5432/app?sslmode=require")
    monkeypatch.setenv(
        "TOKENDIST_RELAY_DATABASE_URL", "postgresql://tokendist_relay:r@db:5432/app?sslmode=require"
    )
    moved = load_settings().in_database("postgresql://owner:o@db:5432/demo_1?sslmode=require")
    assert moved.database_url == "postgresql://owner:o@db:5432/demo_1?sslmode=require"
    assert moved.relay().database_url == (
        "postgresql://tokendist_relay:r@db:5432/demo_1?sslmode=require"
    )
    assert moved.consumer().database_url == moved.database_url
