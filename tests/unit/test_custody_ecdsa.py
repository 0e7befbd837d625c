"""The KMS signer's pure part: a DER signature with any s becomes an Ethereum signature
with low s and the right parity, and the assembled transaction recovers to the key."""

from __future__ import annotations

from typing import Any

import coincurve
import pytest
from coincurve.ecdsa import cdata_to_der, der_to_cdata, deserialize_compact, serialize_compact
from eth_account import Account
from eth_keys.constants import SECPK1_N
from hypothesis import given, settings
from hypothesis import strategies as st

from tokendist.custody.ecdsa import (
    address_of_spki,
    assemble,
    eth_signature,
    low_s,
    signing_digest,
)

TX: dict[str, Any] = {
    "type": 2,
    "chainId": 31337,
    "nonce": 7,
    "to": "0x" + "22" * 20,
    "data": "0xabcdef",
    "value": 0,
    "gas": 210_000,
    "maxFeePerGas": 30 * 10**9,
    "maxPriorityFeePerGas": 10**9,
}
EXAMPLES = 200


def der(r: int, s: int) -> bytes:
    """DER (r, s) as KMS answers, s left as given (high or low)."""
    return bytes(cdata_to_der(deserialize_compact(r.to_bytes(32, "big") + s.to_bytes(32, "big"))))


def spki(key: coincurve.PrivateKey) -> bytes:
    """The public key as KMS's GetPublicKey answers it (DER SubjectPublicKeyInfo)."""
    header = bytes.fromhex("3056301006072a8648ce3d020106052b8104000a034200")
    return header + key.public_key.format(compressed=False)


def test_low_s_keeps_the_low_half_and_flips_the_high_half() -> None:
    half = SECPK1_N // 2
    assert low_s(1) == 1
    assert low_s(half) == half
    assert low_s(half + 1) == SECPK1_N - (half + 1)
    assert low_s(SECPK1_N - 1) == 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(secret=st.integers(1, SECPK1_N - 1), nonce=st.integers(0, 2**32), high=st.booleans())
def test_a_kms_signature_becomes_a_transaction_from_the_keys_address(
    secret: int, nonce: int, high: bool
) -> None:
    key = coincurve.PrivateKey(secret.to_bytes(32, "big"))
    address = address_of_spki(spki(key))
    assert address == Account.from_key(key.secret).address
    tx = {**TX, "nonce": nonce}
    digest = signing_digest(tx)
    # libsecp256k1 always gives the low s
    compact = serialize_compact(der_to_cdata(key.sign(digest, hasher=None)))
    r, s = int.from_bytes(compact[:32], "big"), low_s(int.from_bytes(compact[32:], "big"))
    # KMS answers either twin: the high one must come out as the low one.
    answered = der(r, SECPK1_N - s if high else s)

    v, r_out, s_out = eth_signature(digest, answered, address)

    assert (r_out, s_out) == (r, s)
    assert s_out <= SECPK1_N // 2
    signed = assemble(tx, v, r_out, s_out)
    assert Account.recover_transaction(signed.raw) == address
    # Byte for byte what eth-account signs with the key itself (RFC 6979: same k).
    assert signed.raw == bytes(Account.sign_transaction(tx, key.secret).raw_transaction)


def test_a_signature_by_another_key_recovers_to_neither_parity() -> None:
    mine, other = coincurve.PrivateKey(), coincurve.PrivateKey()
    digest = signing_digest(TX)
    with pytest.raises(ValueError, match="neither parity"):
        eth_signature(digest, other.sign(digest, hasher=None), address_of_spki(spki(mine)))


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x30\x00",
        bytes(88),
        bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + bytes(65),
    ],
    ids=["empty", "empty-sequence", "zeros", "p256-key"],
)
def test_a_public_key_that_is_not_secp256k1_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="secp256k1"):
        address_of_spki(bad)


def test_a_signature_that_is_not_der_is_refused() -> None:
    with pytest.raises(ValueError, match="DER"):
        eth_signature(signing_digest(TX), b"\x30\x02\x02\x00", "0x" + "11" * 20)
