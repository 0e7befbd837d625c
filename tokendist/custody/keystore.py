"""Web3 Secret Storage files (the JSON keystores of geth, foundry's ``cast wallet``,
eth-account's ``Account.encrypt``), decrypted once at start-up with a password read from
a file (a mounted secret, never an environment variable)."""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from pydantic import SecretStr

from tokendist.core.errors import SettingsError
from tokendist.custody.local import LocalSigner

PASSWORD_VARIABLE = "TOKENDIST_OPERATOR_KEYSTORE_PASSWORD_FILE"  # noqa: S105 -- a variable's name


def read_password(path: str | None) -> SecretStr:
    if path is None:
        raise SettingsError(f"keystores need a password: set {PASSWORD_VARIABLE}")
    try:
        # A trailing newline is how editors and `echo` end the file, never the password's.
        return SecretStr(Path(path).read_text().rstrip("\r\n"))
    except OSError as exc:
        raise SettingsError(f"{PASSWORD_VARIABLE}: cannot read {path} ({exc.strerror})") from None


def load(path: str, password: SecretStr) -> LocalSigner:
    """The key in the keystore file at ``path``; a wrong password or an unreadable file is
    a ``SettingsError`` naming the file, never the password."""
    try:
        keyfile = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"keystore {path}: cannot read it ({exc.strerror})") from None
    except ValueError:
        raise SettingsError(f"keystore {path}: not a JSON keystore file") from None
    try:
        key = Account.decrypt(keyfile, password.get_secret_value())
    except ValueError as exc:
        # eth-account says "MAC mismatch" for a wrong password, other texts for a
        # malformed file.
        why = "wrong password" if "MAC mismatch" in str(exc) else "not a valid keystore"
        raise SettingsError(f"keystore {path}: {why} ({PASSWORD_VARIABLE})") from None
    except (KeyError, TypeError):
        raise SettingsError(f"keystore {path}: not a valid keystore") from None
    return LocalSigner(bytes(key), custody="keystore")
