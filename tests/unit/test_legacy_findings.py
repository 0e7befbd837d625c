"""The audit's rule (``tokendist.ops.legacy.findings``) and its file (``report``), pure."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokendist.core.errors import InvalidInput
from tokendist.ops.legacy import report
from tokendist.ops.legacy.findings import Finding, Investment, Investor, Row, Transfer, classify

FUZZ_CASES = 400
WALLETS = [f"0x{i:040x}" for i in range(1, 9)]


def investor(user: str, *wallets: str) -> Investor:
    return Investor(user, wallets[0] if wallets else None, True, frozenset(wallets))


def inv(n: int, user: str, tokens: int, status: str = "confirmed") -> Investment:
    return Investment(f"i{n}", user, "tk", tokens, tokens * 100, status)


def pay(n: int, wallet: str, amount: int) -> Transfer:
    return Transfer("tk", f"0x{n:064x}", 0, n, WALLETS[0], wallet, amount)


def findings(rows: list[Row]) -> dict[str, Finding]:
    return {r.user_id or f"?{r.wallet}": r.finding for r in rows}


def test_each_finding_follows_the_totals_rule() -> None:
    people = [investor(u, WALLETS[i + 1]) for i, u in enumerate("abcdef")]
    investments = [
        inv(1, "a", 10),
        inv(2, "a", 5, "tokens_distributed"),  # a: bought 15, paid 15 -> settled
        inv(3, "b", 10),  # b: paid 10, old database says 4 -> holdings_wrong
        inv(4, "c", 10),  # c: nothing paid -> never_paid
        inv(5, "d", 10),  # d: paid 3 -> underpaid
        inv(6, "e", 10),
        inv(7, "e", 99, "failed"),  # e: bought 10 (a failed payment buys nothing), paid 20
    ]
    transfers = [
        pay(1, WALLETS[1], 7),
        pay(2, WALLETS[1], 8),
        pay(3, WALLETS[2], 10),
        pay(4, WALLETS[4], 3),
        pay(5, WALLETS[5], 10),
        pay(6, WALLETS[5], 10),
        pay(7, WALLETS[7], 5),  # nobody's wallet -> unmatched
    ]
    holdings = {("a", "tk"): 15, ("b", "tk"): 4}
    rows = classify(investments, people, holdings, transfers)
    assert findings(rows) == {
        "a": Finding.SETTLED,
        "b": Finding.HOLDINGS_WRONG,
        "c": Finding.NEVER_PAID,
        "d": Finding.UNDERPAID,
        "e": Finding.OVERPAID,
        f"?{WALLETS[7]}": Finding.UNMATCHED,
    }
    by_user = {r.user_id: r for r in rows}
    assert (by_user["d"].topup, by_user["c"].topup, by_user["e"].topup) == (7, 10, 0)
    assert by_user["e"].difference == 10
    assert [t.tx_hash for t in by_user["e"].transfers] == [
        pay(5, "", 0).tx_hash,
        pay(6, "", 0).tx_hash,
    ]


def test_a_shared_wallet_makes_one_ambiguous_row_and_counts_its_transfers_once() -> None:
    people = [investor("a", WALLETS[1]), investor("b", WALLETS[1]), investor("c", WALLETS[2])]
    rows = classify(
        [inv(1, "a", 10), inv(2, "b", 10), inv(3, "c", 1)],
        people,
        {},
        [pay(1, WALLETS[1], 10), pay(2, WALLETS[2], 1)],
    )
    assert [(r.users, r.finding, r.paid, r.bought) for r in rows] == [
        (("a", "b"), Finding.AMBIGUOUS, 10, 20),
        (("c",), Finding.HOLDINGS_WRONG, 1, 1),
    ]


@settings(max_examples=FUZZ_CASES, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcde"),
            st.integers(1, 50),
            st.sampled_from(["confirmed", "tokens_distributed", "pending", "failed"]),
        ),
        max_size=12,
    ),
    st.lists(st.tuples(st.sampled_from(WALLETS), st.integers(1, 60)), max_size=12),
    st.dictionaries(st.sampled_from("abcde"), st.sampled_from(WALLETS), max_size=5),
)
def test_every_transfer_lands_in_exactly_one_row(
    investments: list[tuple[str, int, str]],
    transfers: list[tuple[str, int]],
    wallets: dict[str, str],
) -> None:
    people = [investor(u, w) for u, w in wallets.items()]
    rows = classify(
        [inv(n, u, t, s) for n, (u, t, s) in enumerate(investments)],
        people,
        {},
        [pay(n, w, a) for n, (w, a) in enumerate(transfers)],
    )
    placed = [t.tx_hash for r in rows for t in r.transfers]
    assert sorted(placed) == sorted(pay(n, "", 0).tx_hash for n in range(len(transfers)))
    assert sum(r.paid for r in rows) == sum(a for _, a in transfers)
    for r in rows:
        assert r.topup == (r.bought - r.paid if r.finding.tops_up else 0)
        assert r.topup >= 0


def _audit(rows: list[Row]) -> report.Audit:
    return report.Audit.create(
        chain_id=31337,
        from_block=0,
        to_block=10,
        old_wallets=[WALLETS[0]],
        tokens={"tk": (WALLETS[6], 18)},
        rows=rows,
    )


def test_the_file_reads_back_as_written_and_its_id_is_its_content(tmp_path: Path) -> None:
    rows = classify([inv(1, "a", 10)], [investor("a", WALLETS[1])], {}, [pay(1, WALLETS[1], 4)])
    audit = _audit(rows)
    json_path, _ = audit.write(tmp_path / "audit")
    again = report.read(json_path)
    assert again.audit_id == audit.audit_id == _audit(rows).audit_id
    assert again.document() == audit.document()
    assert _audit([]).audit_id != audit.audit_id


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d["rows"][0].update(topup="999"), "topup"),
        (lambda d: d["rows"][0].update(paid="5"), "paid"),
        (lambda d: d["rows"][0].update(finding="overpaid", topup="0"), "overpaid"),
        (lambda d: d["rows"][0].update(users=["a", "b"]), "several"),
        (lambda d: d["rows"][0].update(bought="-1"), "bought"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "two rows"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(format="other"), "format"),
    ],
)
def test_an_edit_that_breaks_the_file_is_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], words: str
) -> None:
    rows = classify([inv(1, "a", 10)], [investor("a", WALLETS[1])], {}, [pay(1, WALLETS[1], 4)])
    json_path, _ = _audit(rows).write(tmp_path / "audit")
    doc = json.loads(json_path.read_text())
    edit(doc)
    json_path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="not a tokendist legacy audit") as refused:
        report.read(json_path)
    assert words in str(refused.value).lower()
