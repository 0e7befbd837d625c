"""Pure secp256k1 plumbing between what AWS KMS answers and what Ethereum accepts.

KMS gives a public key as DER SubjectPublicKeyInfo and a signature as DER (r, s), with
any s and no recovery id. Ethereum wants s in the low half of the curve order (EIP-2:
the high-s twin of every signature is refused) and the parity ``v`` that recovers the
sender, which is found by trying both against the key's address.
"""

from __future__ import annotations

from typing import Any

from coincurve.ecdsa import der_to_cdata, serialize_compact
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_keys.constants import SECPK1_N
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from tokendist.custody.signer import SignedTx

# SEQUENCE { SEQUENCE { id-ecPublicKey, secp256k1 }, BIT STRING (no unused bits) } then
# the uncompressed point 04 || X || Y: a KMS ECC_SECG_P256K1 key is always exactly this.
SPKI_PREFIX = bytes.fromhex("3056301006072a8648ce3d020106052b8104000a03420004")
POINT_BYTES = 64


def address_of_spki(der: bytes) -> ChecksumAddress:
    """The Ethereum address of a DER SubjectPublicKeyInfo secp256k1 key."""
    if len(der) != len(SPKI_PREFIX) + POINT_BYTES or not der.startswith(SPKI_PREFIX):
        raise ValueError("not an uncompressed secp256k1 public key")
    return to_checksum_address(keccak(der[len(SPKI_PREFIX) :])[-20:])


def low_s(s: int) -> int:
    """``s`` or its twin ``n - s``, whichever is in the low half (EIP-2)."""
    return SECPK1_N - s if s > SECPK1_N // 2 else s


def eth_signature(digest: bytes, der: bytes, address: str) -> tuple[int, int, int]:
    """(v, r, s) of a DER signature of ``digest`` by ``address``'s key, s normalised."""
    try:
        compact = serialize_compact(der_to_cdata(der))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a DER ECDSA signature: {exc}") from None
    r = int.from_bytes(compact[:32], "big")
    s = low_s(int.from_bytes(compact[32:], "big"))
    for v in (0, 1):
        try:
            public = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
        except BadSignature:  # also r or s out of range: no key signed it
            continue
        if public.to_checksum_address() == address:
            return v, r, s
    raise ValueError(f"the signature recovers to neither parity of {address}")


def signing_digest(tx: dict[str, Any]) -> bytes:
    """The 32 bytes a typed transaction's signature is over."""
    return bytes(TypedTransaction.from_dict(tx).hash())


def assemble(tx: dict[str, Any], v: int, r: int, s: int) -> SignedTx:
    """The signed transaction's bytes, as eth_sendRawTransaction takes them."""
    raw = bytes(TypedTransaction.from_dict({**tx, "v": v, "r": r, "s": s}).encode())
    return SignedTx(raw, "0x" + keccak(raw).hex())
