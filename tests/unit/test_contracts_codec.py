"""The Distributor v2's calldata and logs, encoded and decoded without a chain."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import AsyncWeb3

from tokendist.consumer import contracts

FUZZ_CASES = 300  # per property below

DISTRIBUTOR = "0x" + "d1" * 20
TOKEN = "0x" + "70" * 20

payment_ids = st.binary(min_size=32, max_size=32)
recipients = st.binary(min_size=20, max_size=20).filter(any).map(lambda b: "0x" + b.hex())
amounts = st.integers(min_value=1, max_value=contracts.AMOUNT_LIMIT - 1)
payments = st.lists(st.tuples(payment_ids, recipients, amounts), min_size=1, max_size=50)
first_indices = st.integers(min_value=0, max_value=2**256 - 51)


@settings(max_examples=FUZZ_CASES)
@given(first=first_indices, batch=payments)
def test_calldata_round_trips(first: int, batch: list[tuple[bytes, str, int]]) -> None:
    data = contracts.batch_calldata(first, batch)
    assert contracts.decode_batch_calldata(data) == (first, batch)
    assert len(data) == 2 + 2 * (4 + 32 * 5 + 64 * len(batch))  # one word per id, per payment


@settings(max_examples=FUZZ_CASES)
@given(
    batch=payments,
    position=st.integers(min_value=0),
    bad=st.one_of(
        st.tuples(st.none(), st.integers(max_value=0)),
        st.tuples(st.none(), st.integers(min_value=contracts.AMOUNT_LIMIT)),
        st.tuples(st.just("0x" + "00" * 20), amounts),
        st.tuples(st.text(max_size=45), amounts),
    ),
)
def test_bad_amounts_and_recipients_are_refused(
    batch: list[tuple[bytes, str, int]], position: int, bad: tuple[str | None, int]
) -> None:
    i = position % len(batch)
    pid, to, _ = batch[i]
    batch[i] = (pid, bad[0] if bad[0] is not None else to, bad[1])
    with pytest.raises(ValueError, match=r"amount|address"):
        contracts.batch_calldata(0, batch)


@pytest.mark.parametrize(
    ("first", "batch", "reason"),
    [
        (0, [], "at least one"),
        (-1, [(b"\1" * 32, "0x" + "11" * 20, 1)], "outside"),
        (2**256 - 1, [(b"\1" * 32, "0x" + "11" * 20, 1)] * 2, "outside"),
        (0, [(b"\1" * 31, "0x" + "11" * 20, 1)], "32 bytes"),
        (0, [(b"\1" * 32, "0x" + "11" * 20, True)], "integer"),
        (True, [(b"\1" * 32, "0x" + "11" * 20, 1)], "integer"),
    ],
)
def test_bad_batches_are_refused(
    first: int, batch: list[tuple[bytes, str, int]], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        contracts.batch_calldata(first, batch)


def test_other_calldata_is_not_decoded() -> None:
    with pytest.raises(ValueError, match="not distributeBatch"):
        contracts.decode_batch_calldata("0xa9059cbb" + "00" * 64)
    selector, _ = contracts.function("Distributor", "distributeBatch")
    with pytest.raises(ValueError, match="malformed"):
        contracts.decode_batch_calldata(selector + b"\1" * 40)


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def receipt_logs(
    tx: str, block: int, first: int, batch: list[tuple[bytes, str, int]], paid: list[bool]
) -> list[dict[str, Any]]:
    """The logs ``distributeBatch`` emits, as the raw JSON-RPC answer carries them."""
    logs: list[dict[str, Any]] = []

    def add(address: str, topics: list[str], data: str) -> None:
        logs.append(
            {
                "address": address,
                "topics": topics,
                "data": data,
                "transactionHash": tx,
                "blockNumber": hex(block),
                "logIndex": hex(len(logs)),
            }
        )

    for i, ((pid, to, amount), new) in enumerate(zip(batch, paid, strict=True)):
        topic = contracts.DISTRIBUTED_TOPIC if new else contracts.ALREADY_PAID_TOPIC
        add(DISTRIBUTOR, [topic, "0x" + pid.hex()], _word(first + i))
        if new:
            add(TOKEN, [contracts.TRANSFER_TOPIC, _topic(DISTRIBUTOR), _topic(to)], _word(amount))
    return logs


@settings(max_examples=FUZZ_CASES)
@given(
    first=st.integers(min_value=0, max_value=2**64),
    batch=payments,
    paid=st.lists(st.booleans(), min_size=50, max_size=50),
    block=st.integers(min_value=1, max_value=2**40),
)
def test_outcomes_and_payouts_pair_each_payment_with_its_transfer(
    first: int, batch: list[tuple[bytes, str, int]], paid: list[bool], block: int
) -> None:
    paid = paid[: len(batch)]
    tx = "0x" + "ab" * 32
    logs = receipt_logs(tx, block, first, batch, paid)
    outcomes = contracts.batch_outcomes(logs)
    assert [(o.payment_id, o.index) for o in outcomes] == [
        (pid, first + i) for i, (pid, _, _) in enumerate(batch)
    ]
    assert [o.result is contracts.Result.PAID for o in outcomes] == paid
    found = contracts.payouts(reversed(logs))  # eth_getLogs order is not relied upon
    assert [(p.payment_id, p.index, p.to, p.amount) for p in found] == [
        (pid, first + i, to, amount)
        for i, ((pid, to, amount), new) in enumerate(zip(batch, paid, strict=True))
        if new
    ]
    assert {(p.tx_hash, p.block_number) for p in found} <= {(tx, block)}


def test_a_distributed_log_without_its_transfer_is_not_guessed_at() -> None:
    batch = [(b"\1" * 32, "0x" + "11" * 20, 5), (b"\2" * 32, "0x" + "22" * 20, 6)]
    logs = receipt_logs("0x" + "ab" * 32, 1, 0, batch, [True, True])
    with pytest.raises(ValueError, match="not followed by a Transfer"):
        contracts.payouts(logs[:1] + logs[2:])
    stranger = dict(logs[1], topics=[contracts.TRANSFER_TOPIC, _topic(TOKEN), _topic(TOKEN)])
    with pytest.raises(ValueError, match="not sent by the Distributor"):
        contracts.payouts([logs[0], stranger])


@settings(max_examples=50)
@given(first=first_indices, batch=payments)
def test_calldata_matches_web3s_encoding(first: int, batch: list[tuple[bytes, str, int]]) -> None:
    """The hand-packed words and eth_abi give byte for byte what web3's contract object
    gives for the same call (the ABI is the compiled artifact's)."""
    words = [int(to, 16) << 96 | amount for _, to, amount in batch]
    web3_encoded: Any = (
        AsyncWeb3()
        .eth.contract(abi=contracts.abi("Distributor"))
        .encode_abi("distributeBatch", args=[first, [pid for pid, _, _ in batch], words])
    )
    assert contracts.batch_calldata(first, batch) == web3_encoded
