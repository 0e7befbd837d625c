"""Pre-flight of ERC-3643 (T-REX) payments: which would revert, and why, before any is
signed.

T-REX's ``Token.transfer`` reverts unless the token is unpaused, neither wallet is frozen,
the receiver is verified in the identity registry and the compliance allows it; and one
reverting transfer reverts the Distributor's whole batch. So each payment is asked the
same questions through ``eth_call`` first, and one that would fail is refused with the
condition that must clear, in this order:

- ``paused()``: ``token_paused``, every payment (clears when the agent unpauses);
- ``isFrozen(distributor)`` or ``isFrozen(to)``: ``wallet_frozen`` (the agent unfreezes);
- not ``identityRegistry.isVerified(to)``: ``awaiting_kyc`` (the identity is registered
  with a valid KYC claim: ``tokendist kyc approve``);
- not ``compliance.canTransfer(distributor, to, amount)``: ``compliance_refused`` with
  the first module whose ``moduleCheck`` says no (its rule, or its settings, change).

Payments to the same wallet in one call are checked cumulatively (the second is asked
``canTransfer`` for both amounts together), since within a batch they land one after
another: a maximum-balance module would refuse the second. Modules that count transfers
rather than sum amounts are not modelled; a batch they refuse reverts, like any revert.

Pure but for ``w3_call``, the injected ``eth_call``: ``(to, calldata) -> return data``
(``Chain.call``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from tokendist.consumer import contracts

EthCall = Callable[[str, bytes], Awaitable[bytes]]
K = TypeVar("K", bound=Hashable)


class RefusalReason(enum.StrEnum):
    AWAITING_KYC = "awaiting_kyc"
    COMPLIANCE_REFUSED = "compliance_refused"
    TOKEN_PAUSED = "token_paused"  # noqa: S105 - a reason code, not a credential
    WALLET_FROZEN = "wallet_frozen"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RefusalReason
    detail: str
    module: str | None = None  # compliance_refused: the module's name() (or its address)


async def _read(w3_call: EthCall, contract: str, address: str, fn: str, *args: Any) -> Any:
    selector, types = contracts.function(contract, fn)
    out_types = _outputs(contract, fn)
    data = await w3_call(address, selector + abi_encode(list(types), list(args)))
    return abi_decode(list(out_types), data)[0]


def _outputs(contract: str, fn: str) -> tuple[str, ...]:
    for item in contracts.abi(contract):
        if item["type"] == "function" and item["name"] == fn:
            return tuple(o["type"] for o in item["outputs"])
    raise KeyError(f"{contract} has no function {fn}")


async def preflight(
    w3_call: EthCall,
    token: str,
    distributor: str,
    payments: Sequence[tuple[K, str, int]],
) -> dict[K, Refusal]:
    """The payments (event id, recipient, amount) of ``token`` that the ``distributor``
    could not pay now, each with its reason; those absent would pass."""
    if not payments:
        return {}
    if await _read(w3_call, "Token", token, "paused"):
        refusal = Refusal(RefusalReason.TOKEN_PAUSED, f"token {token} is paused")
        return {key: refusal for key, _, _ in payments}
    if await _read(w3_call, "Token", token, "isFrozen", distributor):
        refusal = Refusal(RefusalReason.WALLET_FROZEN, f"the Distributor {distributor} is frozen")
        return {key: refusal for key, _, _ in payments}
    registry, compliance = await asyncio.gather(
        _read(w3_call, "Token", token, "identityRegistry"),
        _read(w3_call, "Token", token, "compliance"),
    )
    running: dict[str, int] = {}
    asks = []
    for key, to, amount in payments:
        running[to.lower()] = running.get(to.lower(), 0) + amount
        asks.append((key, to, running[to.lower()]))
    found = await asyncio.gather(
        *(
            _one(w3_call, token, registry, compliance, distributor=distributor, to=to, amount=total)
            for _, to, total in asks
        )
    )
    return {key: refusal for (key, _, _), refusal in zip(asks, found, strict=True) if refusal}


async def _one(
    w3_call: EthCall,
    token: str,
    registry: str,
    compliance: str,
    *,
    distributor: str,
    to: str,
    amount: int,
) -> Refusal | None:
    frozen, verified, allowed = await asyncio.gather(
        _read(w3_call, "Token", token, "isFrozen", to),
        _read(w3_call, "IdentityRegistry", registry, "isVerified", to),
        _read(w3_call, "ModularCompliance", compliance, "canTransfer", distributor, to, amount),
    )
    if frozen:
        return Refusal(RefusalReason.WALLET_FROZEN, f"wallet {to} is frozen")
    if not verified:
        return Refusal(RefusalReason.AWAITING_KYC, f"wallet {to} has no verified identity")
    if not allowed:
        module = await _refusing_module(w3_call, compliance, distributor, to, amount)
        return Refusal(
            RefusalReason.COMPLIANCE_REFUSED,
            f"compliance {compliance} refuses {amount} to {to} (module {module})",
            module=module,
        )
    return None


async def _refusing_module(
    w3_call: EthCall, compliance: str, distributor: str, to: str, amount: int
) -> str:
    """The first bound module whose check says no, by ``name()``; the compliance itself
    when none does (its answer changed in between). Every T-REX module implements
    ``IModule``, so one module's ABI reads them all."""
    modules = await _read(w3_call, "ModularCompliance", compliance, "getModules")
    for module in modules:
        ok = await _read(
            w3_call, "CountryRestrictModule", module, "moduleCheck",
            distributor, to, amount, compliance,
        )  # fmt: skip
        if not ok:
            name: str = await _read(w3_call, "CountryRestrictModule", module, "name")
            return name or str(module)
    return compliance
