"""AWS KMS keys (``ECC_SECG_P256K1``, ``SIGN_VERIFY``): the private key never leaves
the service; we ask it to sign the transaction's digest (``tokendist.custody.ecdsa``
turns its answer into an Ethereum signature). Any KMS-compatible endpoint works
(``TOKENDIST_KMS_ENDPOINT_URL``: local-kms in the stack); credentials come from boto3's
usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role).

KMS answers mapped, once, here:

    no connection, timeout, throttling, 5xx, KMSInternal, KeyUnavailable
                                            → SignerUnavailable (sign again later)
    disabled, pending deletion, access denied, not found, wrong key spec or usage,
    no credentials, anything else           → KeyRejected (the pool rests the key)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from eth_typing import ChecksumAddress

from tokendist.core.errors import KeyRejected, SignerUnavailable
from tokendist.custody.ecdsa import address_of_spki, assemble, eth_signature, signing_digest
from tokendist.custody.signer import SignedTx

KEY_SPEC = "ECC_SECG_P256K1"
SIGNING_ALGORITHM = "ECDSA_SHA_256"
# What KMS itself calls retryable (its API reference: "the request can be retried").
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "KMSInternalException",
        "KeyUnavailableException",
        "DependencyTimeoutException",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalFailure",
    }
)
SERVER_ERROR = 500


def client(endpoint_url: str | None, region: str, timeout_s: float) -> Any:
    """A KMS client that tries each call once: the caller's backoff decides when to ask
    again, and a signing batch never hangs in the SDK's own retries."""
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return boto3.client("kms", endpoint_url=endpoint_url, region_name=region, config=config)


def _mapped(exc: Exception, key_id: str) -> Exception:
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return SignerUnavailable(f"KMS unreachable: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in TRANSIENT_CODES or status >= SERVER_ERROR:
            return SignerUnavailable(f"KMS {code or status}: {error.get('Message', '')}")
        return KeyRejected(f"KMS key {key_id}: {code}: {error.get('Message', '')}")
    return KeyRejected(f"KMS key {key_id}: {type(exc).__name__}: {exc}")


async def _call(key_id: str, op: Callable[..., dict[str, Any]], **params: Any) -> dict[str, Any]:
    """``op`` (a blocking boto3 call) off the event loop, its errors mapped."""
    try:
        return await asyncio.to_thread(op, KeyId=key_id, **params)
    except (BotoCoreError, ClientError) as exc:
        raise _mapped(exc, key_id) from exc


async def create_key(kms: Any) -> str:
    """A new secp256k1 signing key's id: what an operator makes once per key (the
    benchmark makes its own on the stack's local-kms)."""
    try:
        answer = await asyncio.to_thread(kms.create_key, KeySpec=KEY_SPEC, KeyUsage="SIGN_VERIFY")
    except (BotoCoreError, ClientError) as exc:
        raise _mapped(exc, "(new)") from exc
    return str(answer["KeyMetadata"]["KeyId"])


class KmsSigner:
    custody = "kms"

    def __init__(self, kms: Any, key_id: str, address: ChecksumAddress) -> None:
        self._kms = kms
        self.key_id = key_id
        self._address = address

    def __repr__(self) -> str:
        return f"KmsSigner({self.key_id}, {self.address})"

    @classmethod
    async def open(cls, kms: Any, key_id: str) -> KmsSigner:
        """The signer of ``key_id``, its address derived from the public key KMS holds;
        ``KeyRejected`` if the key is not a secp256k1 signing key."""
        answer = await _call(key_id, kms.get_public_key)
        if answer.get("KeySpec") != KEY_SPEC or answer.get("KeyUsage") != "SIGN_VERIFY":
            raise KeyRejected(
                f"KMS key {key_id} is {answer.get('KeySpec')}/{answer.get('KeyUsage')}, "
                f"not {KEY_SPEC}/SIGN_VERIFY"
            )
        return cls(kms, key_id, address_of_spki(bytes(answer["PublicKey"])))

    @property
    def address(self) -> ChecksumAddress:
        return self._address

    async def sign(self, tx: dict[str, Any]) -> SignedTx:
        digest = signing_digest(tx)
        answer = await _call(
            self.key_id,
            self._kms.sign,
            Message=digest,
            MessageType="DIGEST",
            SigningAlgorithm=SIGNING_ALGORITHM,
        )
        try:
            v, r, s = eth_signature(digest, bytes(answer["Signature"]), self._address)
        except ValueError as exc:  # a key that is not the one we derived the address of
            raise KeyRejected(f"KMS key {self.key_id}: {exc}") from exc
        return assemble(tx, v, r, s)
