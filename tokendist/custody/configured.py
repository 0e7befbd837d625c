"""The operator keys the settings name, opened: the composition roots (the consumer's
wiring, the operator commands) call ``operator_signers`` once at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from tokendist.core.errors import KeyRejected, SettingsError
from tokendist.core.settings import ENV_PREFIX, LOCAL_HINT, SignerSettings
from tokendist.custody import keystore, kms
from tokendist.custody.local import LocalSigner
from tokendist.custody.signer import Signer

log = structlog.get_logger("tokendist.custody")

ANVIL_CHAIN_ID = 31337


async def operator_signers(settings: SignerSettings) -> list[Signer]:
    """Raw keys, then keystores, then KMS keys, each address once. A key that cannot be
    opened as configured (wrong password, a KMS key that is not a secp256k1 signing
    key) is a ``SettingsError``; KMS unreachable is ``SignerUnavailable`` (wait)."""
    signers: list[Signer] = [LocalSigner(key) for key in settings.raw_keys()]
    paths = settings.keystore_paths()
    if paths:
        password = keystore.read_password(settings.operator_keystore_password_file)
        # scrypt is deliberately slow (about a second a file): off the event loop.
        signers += await asyncio.gather(
            *(asyncio.to_thread(keystore.load, path, password) for path in paths)
        )
    key_ids = settings.kms_key_ids()
    if key_ids:
        client = kms.client(settings.kms_endpoint_url, settings.kms_region, settings.kms_timeout_s)
        try:
            signers += [await kms.KmsSigner.open(client, key_id) for key_id in key_ids]
        except KeyRejected as exc:
            raise SettingsError(f"{ENV_PREFIX}OPERATOR_KMS_KEY_IDS: {exc.reason}") from None
    if not signers:
        raise SettingsError(
            f"set {ENV_PREFIX}OPERATOR_KEYSTORES, {ENV_PREFIX}OPERATOR_KMS_KEY_IDS or "
            f"{ENV_PREFIX}OPERATOR_KEY ({LOCAL_HINT})"
        )
    unique: dict[str, Signer] = {}
    for signer in signers:
        unique.setdefault(signer.address, signer)
    return list(unique.values())


def warn_if_raw(signers: Sequence[Signer], chain_id: int) -> None:
    """A raw key in the environment is for anvil only: say so loudly anywhere else."""
    raw = [s.address for s in signers if s.custody == "local"]
    if raw and chain_id != ANVIL_CHAIN_ID:
        log.warning(
            "raw_key_outside_development",
            chain_id=chain_id,
            senders=raw,
            hint=f"move them to {ENV_PREFIX}OPERATOR_KEYSTORES or {ENV_PREFIX}OPERATOR_KMS_KEY_IDS",
            alert=True,
        )
