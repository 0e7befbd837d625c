"""The pre-flight's own logic over an in-memory T-REX (calls answered by selector): the
order of the reasons, and payments to one wallet checked for their running total."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from tokendist.consumer import contracts
from tokendist.consumer.compliance import RefusalReason, preflight

TOKEN, REGISTRY, COMPLIANCE, MODULE = (f"0x{i:040x}" for i in (1, 2, 3, 4))
DISTRIBUTOR, A, B = (f"0x{i:040x}" for i in (10, 11, 12))


@dataclass
class FakeTrex:
    paused: bool = False
    frozen: set[str] = field(default_factory=set)
    verified: set[str] = field(default_factory=lambda: {A, B})
    max_balance: int = 10**30

    async def call(self, to: str, data: bytes) -> bytes:
        for contract, fn, answer in self._answers(to):
            selector, types = contracts.function(contract, fn)
            if data[:4] == selector:
                out_type, value = answer(*abi_decode(list(types), data[4:]))
                return abi_encode([out_type], [value])
        raise AssertionError(f"unexpected call to {to}")

    def _answers(self, to: str) -> list[tuple[str, str, Callable[..., tuple[str, Any]]]]:
        allowed = lambda _f, _t, amount, *_: ("bool", amount <= self.max_balance)  # noqa: E731
        answers: dict[str, list[tuple[str, str, Callable[..., tuple[str, Any]]]]] = {
            TOKEN: [
                ("Token", "paused", lambda: ("bool", self.paused)),
                ("Token", "isFrozen", lambda w: ("bool", w.lower() in self.frozen)),
                ("Token", "identityRegistry", lambda: ("address", REGISTRY)),
                ("Token", "compliance", lambda: ("address", COMPLIANCE)),
            ],
            REGISTRY: [
                ("IdentityRegistry", "isVerified", lambda w: ("bool", w.lower() in self.verified))
            ],
            COMPLIANCE: [
                ("ModularCompliance", "canTransfer", allowed),
                ("ModularCompliance", "getModules", lambda: ("address[]", [MODULE])),
            ],
            MODULE: [
                ("CountryRestrictModule", "moduleCheck", allowed),
                ("CountryRestrictModule", "name", lambda: ("string", "MaxBalanceModule")),
            ],
        }
        return answers[to]


async def test_payments_to_one_wallet_are_checked_for_their_running_total() -> None:
    chain = FakeTrex(max_balance=25)
    refused = await preflight(
        chain.call, TOKEN, DISTRIBUTOR, [(1, A, 10), (2, B, 10), (3, A, 10), (4, A, 10)]
    )
    assert list(refused) == [4]
    assert refused[4].reason is RefusalReason.COMPLIANCE_REFUSED
    assert refused[4].module == "MaxBalanceModule"


async def test_reasons_come_in_order_paused_frozen_kyc_compliance() -> None:
    payments = [(1, A, 10), (2, B, 10)]
    chain = FakeTrex(frozen={A}, verified={A}, max_balance=0)
    refused = await preflight(chain.call, TOKEN, DISTRIBUTOR, payments)
    assert {k: r.reason for k, r in refused.items()} == {
        1: RefusalReason.WALLET_FROZEN,
        2: RefusalReason.AWAITING_KYC,
    }
    chain.frozen = {DISTRIBUTOR}
    refused = await preflight(chain.call, TOKEN, DISTRIBUTOR, payments)
    assert {r.reason for r in refused.values()} == {RefusalReason.WALLET_FROZEN}
    chain.paused = True
    refused = await preflight(chain.call, TOKEN, DISTRIBUTOR, payments)
    assert {k: r.reason for k, r in refused.items()} == {
        1: RefusalReason.TOKEN_PAUSED,
        2: RefusalReason.TOKEN_PAUSED,
    }
    assert await preflight(chain.call, TOKEN, DISTRIBUTOR, []) == {}
