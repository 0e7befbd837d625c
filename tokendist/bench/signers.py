"""Signing rate per key custody (``tokendist.custody``): the same ``distributeBatch``
transaction of ``batch_max_size`` payments signed ``count`` times, one after another as
the gatherer signs, by a raw local key, a keystore key and a KMS key.

The KMS key is the first of ``TOKENDIST_OPERATOR_KMS_KEY_IDS``, else one created at
``TOKENDIST_KMS_ENDPOINT_URL`` (the stack's local-kms); with neither, "not configured".
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

from eth_account import Account
from pydantic import SecretStr

from tokendist.bench import workload
from tokendist.bench.results import Rate, SignerRate
from tokendist.consumer import contracts
from tokendist.core.errors import KeyRejected, SignerUnavailable
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner, Signer, keystore, kms

SIGNATURES = 200
# A light scrypt cost: the keystore is decrypted once, here and at a consumer's start;
# what is measured is signing, which is the same whatever the cost.
KEYSTORE_SCRYPT_N = 2**12


async def rates(settings: Settings, count: int = SIGNATURES) -> tuple[SignerRate, ...]:
    key = Account.create().key
    kms_signer, note = await _kms_signer(settings)
    measured = [
        SignerRate("local", await _rate(LocalSigner(bytes(key)), settings, count)),
        SignerRate("keystore", await _rate(await _keystore(bytes(key)), settings, count)),
    ]
    if kms_signer is None:
        return (*measured, SignerRate("kms", None, note))
    try:
        return (*measured, SignerRate("kms", await _rate(kms_signer, settings, count), note))
    except (SignerUnavailable, KeyRejected) as exc:
        return (*measured, SignerRate("kms", None, f"failed: {exc}"))


async def _rate(signer: Signer, settings: Settings, count: int) -> Rate:
    size = settings.batch_max_size
    wallets = workload.make_wallets(size)
    data = contracts.batch_calldata(
        0, [(i.to_bytes(32, "big"), w, 10**18 + i) for i, w in enumerate(wallets)]
    )
    tx = {
        "type": 2,
        "chainId": 31337,
        "to": wallets[0],
        "data": data,
        "value": 0,
        "gas": 10_000_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
    }
    start = time.perf_counter()
    for nonce in range(count):
        await signer.sign({**tx, "nonce": nonce})
    seconds = time.perf_counter() - start
    return Rate.of(f"{signer.custody}: a batch of {size} signed", count, seconds)


async def _keystore(key: bytes) -> Signer:
    password = secrets.token_hex(16)
    keyfile = Account.encrypt(key, password, kdf="scrypt", iterations=KEYSTORE_SCRYPT_N)
    with tempfile.TemporaryDirectory(prefix="tokendist-bench-keystore-") as tmp:
        path = Path(tmp) / "key.json"
        path.write_text(json.dumps(keyfile))
        return await asyncio.to_thread(keystore.load, str(path), SecretStr(password))


async def _kms_signer(settings: Settings) -> tuple[Signer | None, str]:
    ids = settings.kms_key_ids()
    if not ids and settings.kms_endpoint_url is None:
        return None, "not configured (TOKENDIST_KMS_ENDPOINT_URL or TOKENDIST_OPERATOR_KMS_KEY_IDS)"
    client = kms.client(settings.kms_endpoint_url, settings.kms_region, settings.kms_timeout_s)
    try:
        if ids:
            return await kms.KmsSigner.open(client, ids[0]), f"key {ids[0]}"
        key_id = await kms.create_key(client)
        signer = await kms.KmsSigner.open(client, key_id)
    except (SignerUnavailable, KeyRejected) as exc:  # reported, not fatal
        return None, f"failed: {exc}"
    return signer, f"a key created at {settings.kms_endpoint_url}"
