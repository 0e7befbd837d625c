"""Where the operator keys live, and how a transaction is signed with one of them.

Each key is a ``Signer``: its address, and the raw bytes of a signed EIP-1559 transaction.
The key pool (``consumer.keypool``) signs through it and never sees a secret. Three
custodies, chosen per key by settings (``core.settings.SignerSettings``):

    local     a hex private key in the environment: local development only
    keystore  a Web3 Secret Storage file (scrypt/pbkdf2 + AES), its password in a file
    kms       an AWS KMS key (ECC_SECG_P256K1) that never leaves the service
"""

from tokendist.custody.configured import operator_signers, warn_if_raw
from tokendist.custody.local import LocalSigner
from tokendist.custody.signer import SignedTx, Signer

__all__ = ["LocalSigner", "SignedTx", "Signer", "operator_signers", "warn_if_raw"]
