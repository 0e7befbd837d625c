"""ERC-3643 (T-REX) on the chain: the suite a tokenization deploys, and investors'
ONCHAINID identities carrying the platform's KYC claim.

Who is who (the deployer key plays the issuer's every role, as a small issuer would):

| role | holder |
|---|---|
| owner of every suite contract, agent of the token and of the identity registry | deployer |
| ONCHAINID factory owner (creates identities) | deployer |
| claim issuer's management key (signs KYC claims) | deployer |
| management key of each investor's identity (custodial: the investor has no key there) | deployer |

What T-REX asks of the Distributor, read from ``Token.transfer`` 4.1.6: a *sender* needs
nothing but an unfrozen wallet and an unpaused token (neither agent nor identity); the
*receiver* must be verified (``isVerified``) and the compliance must allow the transfer
(``canTransfer``). So the Distributor pays without any role, but to be *funded* (minted
to) it must itself be a verified holder: it gets the platform's identity with a KYC
claim, registered under the platform's country.

Every step that changes the chain checks first (identity already created, claim already
valid, wallet already registered), so running a step again after a crash does nothing
twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import ContractLogicError

from tokendist.consumer import contracts
from tokendist.consumer.chain import guarded
from tokendist.core import db
from tokendist.core.errors import ChainRejected, InvalidInput
from tokendist.ops.deploy import Deployer, Deployment, check_deployable, record_deployment
from tokendist.ops.repository import ToolRepository

# The claim topic the platform's KYC claims carry (ERC-735 topics are the issuer's
# choice; 1 is the customary KYC topic of ONCHAINID deployments).
KYC_CLAIM_TOPIC = 1
ECDSA_SCHEME = 1
MANAGEMENT_PURPOSE = 1
ECDSA_KEY_TYPE = 1
# What a KYC claim states: a label only, never personal data (claims are public).
KYC_CLAIM_DATA = b"tokendist:kyc:approved"
ZERO = "0x0000000000000000000000000000000000000000"
MAX_DECIMALS = 18  # Token.init refuses more


@dataclass(frozen=True, slots=True)
class Platform:
    """Shared by every suite of a chain: one identity per investor, one claim issuer."""

    id_factory: str
    claim_issuer: str


@dataclass(frozen=True, slots=True)
class Suite:
    token: str
    distributor: str
    identity_registry: str
    identity_registry_storage: str
    trusted_issuers_registry: str
    claim_topics_registry: str
    compliance: str
    platform: Platform
    kyc_claim_topic: int = KYC_CLAIM_TOPIC


def key_hash(address: str) -> bytes:
    """An ONCHAINID key: keccak256(abi.encode(address))."""
    return keccak(abi_encode(["address"], [AsyncWeb3.to_checksum_address(address)]))


class Trex(Deployer):
    """The deployer key's T-REX side: deploys suites and manages identities."""

    def contract(self, name: str, address: str) -> AsyncContract:
        return self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(address), abi=contracts.abi(name)
        )

    async def read(self, fn: AsyncContractFunction) -> Any:
        return await guarded(fn.call)

    async def send(self, fn: AsyncContractFunction) -> None:
        """Send ``fn`` from the deployer; a call the node says would revert is refused
        with T-REX's reason before anything is signed."""
        try:
            tx = await guarded(lambda: fn.build_transaction({"from": self.account.address}))
        except ContractLogicError as exc:
            raise ChainRejected(f"{fn.fn_name}: {exc.message or exc}") from exc
        await self._transact(dict(tx))

    async def fund(self, token: str, distributor: str, amount: int) -> None:
        """More tokens for the Distributor: minted by the agent (a T-REX issuer keeps no
        treasury; the deployer is not a verified holder and could not send any)."""
        await self.send(self.contract("Token", token).functions.mint(distributor, amount))

    # --- deployment ---------------------------------------------------------------------

    async def deploy_platform(self) -> Platform:
        """The ONCHAINID factory (over an identity implementation) and the claim issuer."""
        me = self.account.address
        implementation = await self._deploy("Identity", me, True)
        authority = await self._deploy("ImplementationAuthority", implementation)
        id_factory = await self._deploy("IdFactory", authority)
        claim_issuer = await self._deploy("ClaimIssuer", me)
        return Platform(id_factory=id_factory, claim_issuer=claim_issuer)

    async def _registries(self, claim_issuer: str) -> tuple[str, str, str, str]:
        """Trusted issuers (the platform's claim issuer for the KYC topic), claim topics
        (KYC required), identity registry storage, identity registry (bound, deployer
        as agent); returns (tir, ctr, irs, ir)."""
        tir = await self._deploy("TrustedIssuersRegistry")
        await self.send(self.contract("TrustedIssuersRegistry", tir).functions.init())
        ctr = await self._deploy("ClaimTopicsRegistry")
        await self.send(self.contract("ClaimTopicsRegistry", ctr).functions.init())
        await self.send(
            self.contract("ClaimTopicsRegistry", ctr).functions.addClaimTopic(KYC_CLAIM_TOPIC)
        )
        await self.send(
            self.contract("TrustedIssuersRegistry", tir).functions.addTrustedIssuer(
                AsyncWeb3.to_checksum_address(claim_issuer), [KYC_CLAIM_TOPIC]
            )
        )
        irs = await self._deploy("IdentityRegistryStorage")
        await self.send(self.contract("IdentityRegistryStorage", irs).functions.init())
        ir = await self._deploy("IdentityRegistry")
        await self.send(self.contract("IdentityRegistry", ir).functions.init(tir, ctr, irs))
        await self.send(
            self.contract("IdentityRegistryStorage", irs).functions.bindIdentityRegistry(ir)
        )
        await self.send(
            self.contract("IdentityRegistry", ir).functions.addAgent(self.account.address)
        )
        return tir, ctr, irs, ir

    async def deploy_suite(
        self,
        *,
        platform: Platform,
        operators: Sequence[str],
        name: str,
        symbol: str,
        decimals: int,
        fund: int,
        country: int,
    ) -> Suite:
        """A complete suite and its Distributor, verified under ``country`` and minted
        ``fund``; the token is unpaused (T-REX deploys it paused)."""
        tir, ctr, irs, ir = await self._registries(platform.claim_issuer)
        compliance = await self._deploy("ModularCompliance")
        await self.send(self.contract("ModularCompliance", compliance).functions.init())
        token = await self._deploy("Token")
        t = self.contract("Token", token).functions
        await self.send(t.init(ir, compliance, name, symbol, decimals, ZERO))
        await self.send(t.addAgent(self.account.address))
        # The factory T-REX ships makes the token an agent of its registry too (recovery).
        await self.send(self.contract("IdentityRegistry", ir).functions.addAgent(token))
        distributor = await self._deploy(
            "Distributor",
            token,
            self.account.address,
            [AsyncWeb3.to_checksum_address(o) for o in operators],
        )
        identity = await self.ensure_identity(platform, distributor)
        await self.ensure_kyc_claim(identity, platform.claim_issuer)
        await self.ensure_registered(ir, distributor, identity, country)
        await self.send(t.unpause())
        await self.send(t.mint(distributor, fund))
        return Suite(
            token=token,
            distributor=distributor,
            identity_registry=ir,
            identity_registry_storage=irs,
            trusted_issuers_registry=tir,
            claim_topics_registry=ctr,
            compliance=compliance,
            platform=platform,
        )

    # --- identities ---------------------------------------------------------------------

    async def ensure_identity(self, platform: Platform, wallet: str) -> str:
        """The ONCHAINID identity linked to ``wallet``, created (deployer as management
        key) when there is none."""
        factory = self.contract("IdFactory", platform.id_factory).functions
        wallet = AsyncWeb3.to_checksum_address(wallet)
        found = str(await self.read(factory.getIdentity(wallet)))
        if int(found, 16) == 0:
            await self.send(self.create_identity(platform, wallet))
            found = str(await self.read(factory.getIdentity(wallet)))
        return AsyncWeb3.to_checksum_address(found)

    def create_identity(self, platform: Platform, wallet: str) -> AsyncContractFunction:
        """The factory's call that creates ``wallet``'s identity, the deployer its
        management key (custodial identities)."""
        factory = self.contract("IdFactory", platform.id_factory).functions
        wallet = AsyncWeb3.to_checksum_address(wallet)
        return factory.createIdentityWithManagementKeys(
            wallet, wallet.lower(), [key_hash(self.account.address)]
        )

    def kyc_signature(self, identity: str, topic: int = KYC_CLAIM_TOPIC) -> bytes:
        """The claim issuer's signature: ``ClaimIssuer.isClaimValid`` recovers it from the
        prefixed keccak256(abi.encode(identity, topic, data))."""
        digest = keccak(
            abi_encode(
                ["address", "uint256", "bytes"],
                [AsyncWeb3.to_checksum_address(identity), topic, KYC_CLAIM_DATA],
            )
        )
        signed = Account.sign_message(encode_defunct(primitive=digest), self.account.key)
        return bytes(signed.signature)

    async def ensure_kyc_claim(self, identity: str, claim_issuer: str) -> None:
        """The identity holds a KYC claim of the platform's issuer that the issuer still
        deems valid; added when missing (re-adding would only rewrite it)."""
        claim_id = keccak(
            abi_encode(
                ["address", "uint256"],
                [AsyncWeb3.to_checksum_address(claim_issuer), KYC_CLAIM_TOPIC],
            )
        )
        ident = self.contract("Identity", identity).functions
        topic, _, _, signature, data, _ = await self.read(ident.getClaim(claim_id))
        if topic == KYC_CLAIM_TOPIC and await self.read(
            self.contract("ClaimIssuer", claim_issuer).functions.isClaimValid(
                identity, topic, signature, data
            )
        ):
            return
        await self.send(self.add_kyc_claim(identity, claim_issuer))

    def add_kyc_claim(self, identity: str, claim_issuer: str) -> AsyncContractFunction:
        """The identity's call that adds the platform issuer's KYC claim."""
        return self.contract("Identity", identity).functions.addClaim(
            KYC_CLAIM_TOPIC,
            ECDSA_SCHEME,
            AsyncWeb3.to_checksum_address(claim_issuer),
            self.kyc_signature(identity),
            KYC_CLAIM_DATA,
            "",
        )

    async def ensure_registered(
        self, identity_registry: str, wallet: str, identity: str, country: int
    ) -> None:
        """``wallet`` registered with ``identity`` under ``country`` (updated if another)."""
        ir = self.contract("IdentityRegistry", identity_registry).functions
        wallet = AsyncWeb3.to_checksum_address(wallet)
        if not await self.read(ir.contains(wallet)):
            await self.send(ir.registerIdentity(wallet, identity, country))
            return
        if str(await self.read(ir.identity(wallet))).lower() != identity.lower():
            await self.send(ir.updateIdentity(wallet, identity))
        if await self.read(ir.investorCountry(wallet)) != country:
            await self.send(ir.updateCountry(wallet, country))

    async def ensure_removed(self, identity_registry: str, wallet: str) -> None:
        ir = self.contract("IdentityRegistry", identity_registry).functions
        wallet = AsyncWeb3.to_checksum_address(wallet)
        if await self.read(ir.contains(wallet)):
            await self.send(ir.deleteIdentity(wallet))

    async def is_verified(self, identity_registry: str, wallet: str) -> bool:
        ir = self.contract("IdentityRegistry", identity_registry).functions
        return bool(await self.read(ir.isVerified(AsyncWeb3.to_checksum_address(wallet))))


async def deploy_erc3643_tokenization(
    trex: Trex,
    conn: db.Connection,
    *,
    tokenization_id: str,
    property_id: str,
    operator: str | Sequence[str],
    name: str,
    symbol: str,
    decimals: int,
    supply: int,
    country: int,
    fund: int | None = None,
) -> Deployment:
    """Deploy and record one ERC-3643 tokenization: a suite whose Distributor is minted
    ``fund`` (default: the whole ``supply``; T-REX mints on demand, so the rest is minted
    by the agent later rather than parked in a treasury). The chain's first suite also
    deploys the platform's ONCHAINID factory and claim issuer; later ones share them."""
    if decimals > MAX_DECIMALS:
        raise InvalidInput(f"--decimals {decimals}: an ERC-3643 token has at most 18")
    ops = ToolRepository(conn)
    await check_deployable(ops, tokenization_id, supply, fund)
    chain_id = await trex.chain_id()
    found = await ops.erc3643_platform(chain_id)
    platform = (
        Platform(id_factory=found["id_factory"], claim_issuer=found["claim_issuer"])
        if found is not None
        else await trex.deploy_platform()
    )
    suite = await trex.deploy_suite(
        platform=platform,
        operators=[operator] if isinstance(operator, str) else operator,
        name=name,
        symbol=symbol,
        decimals=decimals,
        fund=supply if fund is None else fund,
        country=country,
    )
    deployment = Deployment(
        tokenization_id=tokenization_id,
        property_id=property_id,
        chain_id=chain_id,
        token_address=suite.token,
        distributor_address=suite.distributor,
        decimals=decimals,
        supply=supply,
        standard="erc3643",
    )
    await record_deployment(ops, deployment, suite_row(suite))
    return deployment


def suite_row(suite: Suite) -> dict[str, str | int]:
    return {
        "identity_registry": suite.identity_registry,
        "identity_registry_storage": suite.identity_registry_storage,
        "trusted_issuers_registry": suite.trusted_issuers_registry,
        "claim_topics_registry": suite.claim_topics_registry,
        "compliance": suite.compliance,
        "id_factory": suite.platform.id_factory,
        "claim_issuer": suite.platform.claim_issuer,
        "kyc_claim_topic": suite.kyc_claim_topic,
    }
