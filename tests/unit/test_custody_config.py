"""Which operator keys the settings name, each source opened, each address once; the
refusals at start-up are one clear line, and a raw key off anvil is warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from structlog.testing import capture_logs

from tokendist.core.errors import SettingsError
from tokendist.core.settings import SignerSettings
from tokendist.custody import LocalSigner, operator_signers, warn_if_raw

PASSWORD = "s3cret-pass"  # noqa: S105 -- a test keystore's


def hexkey(account: LocalAccount) -> str:
    return "0x" + bytes(account.key).hex()


def keystore(tmp_path: Path, key: bytes, name: str = "k.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(Account.encrypt(key, PASSWORD, kdf="pbkdf2", iterations=2)))
    return str(path)


def password(tmp_path: Path, text: str = PASSWORD) -> str:
    path = tmp_path / "password"
    path.write_text(text + "\n")
    return str(path)


def test_raw_keys_come_first_then_more_each_once() -> None:
    a, b = Account.create(), Account.create()
    s = SignerSettings(
        operator_key=SecretStr(hexkey(a)),
        operator_keys=SecretStr(f" {hexkey(b)}, {hexkey(a)},,"),
        operator_keystores="x.json, y.json ,x.json",
        operator_kms_key_ids="k1,k2",
    )
    assert [k.get_secret_value() for k in s.raw_keys()] == [hexkey(a), hexkey(b)]
    assert s.keystore_paths() == ["x.json", "y.json"]
    assert s.kms_key_ids() == ["k1", "k2"]
    assert s.has_operator_keys
    assert not SignerSettings().has_operator_keys


async def test_every_source_opened_and_a_key_in_two_sources_counted_once(tmp_path: Path) -> None:
    raw, stored = Account.create(), Account.create()
    s = SignerSettings(
        operator_key=SecretStr(hexkey(raw)),
        operator_keystores=",".join(
            [keystore(tmp_path, stored.key), keystore(tmp_path, raw.key, "same.json")]
        ),
        operator_keystore_password_file=password(tmp_path),
    )
    signers = await operator_signers(s)
    assert [(x.address, x.custody) for x in signers] == [
        (raw.address, "local"),
        (stored.address, "keystore"),
    ]


async def test_no_key_at_all_names_every_source() -> None:
    with pytest.raises(SettingsError, match=r"OPERATOR_KEYSTORES, .*OPERATOR_KMS_KEY_IDS or"):
        await operator_signers(SignerSettings())


async def test_keystore_refusals_name_the_file_never_the_password(tmp_path: Path) -> None:
    path = keystore(tmp_path, Account.create().key)
    no_password = SignerSettings(operator_keystores=path)
    with pytest.raises(SettingsError, match="KEYSTORE_PASSWORD_FILE"):
        await operator_signers(no_password)
    wrong = no_password.model_copy(
        update={"operator_keystore_password_file": password(tmp_path, "not-it")}
    )
    with pytest.raises(SettingsError) as refused:
        await operator_signers(wrong)
    assert str(refused.value) == (
        f"keystore {path}: wrong password (TOKENDIST_OPERATOR_KEYSTORE_PASSWORD_FILE)"
    )
    (tmp_path / "bad.json").write_text("{not json")
    garbled = wrong.model_copy(update={"operator_keystores": str(tmp_path / "bad.json")})
    with pytest.raises(SettingsError, match="not a JSON keystore"):
        await operator_signers(garbled)


def test_a_malformed_raw_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as refused:
        LocalSigner(SecretStr("0x1234"))
    assert "1234" not in str(refused.value)


@pytest.mark.parametrize(("chain_id", "warned"), [(31337, False), (1, True), (137, True)])
def test_a_raw_key_off_anvil_is_warned_about_by_address(chain_id: int, warned: bool) -> None:
    key = Account.create()
    with capture_logs() as logs:
        warn_if_raw([LocalSigner(SecretStr(hexkey(key)))], chain_id)
    events = [e for e in logs if e["event"] == "raw_key_outside_development"]
    assert len(events) == int(warned)
    if warned:
        assert events[0]["senders"] == [key.address]
        assert hexkey(key)[2:] not in json.dumps(events[0])


def test_keys_out_of_the_environment_are_never_warned_about() -> None:
    stored = LocalSigner(bytes(Account.create().key), custody="keystore")
    with capture_logs() as logs:
        warn_if_raw([stored], 1)
    assert logs == []
