"""The audit file: written as JSON (the machine-readable record settle reads back) and CSV
(the same rows for a spreadsheet), rendered as a summary and a per-investor table.

Amounts are decimal strings of base units (they exceed what JSON numbers carry exactly).
The audit id is derived from the content (a UUIDv5 of its canonical JSON): the same
history audited twice has one id, so settling either file pays once. Reading a file back
is strict: an operator may edit the file they review, and settle must refuse, not guess,
when an edit breaks it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokendist.core.errors import InvalidInput
from tokendist.ops.legacy.findings import Finding, Row, Transfer
from tokendist.schemas.events import Identifier

FORMAT = "tokendist-legacy-audit"
NAMESPACE = uuid.UUID("5b0e6f62-8f0b-4d33-9a43-6c1e52d1a2f7")
CSV_COLUMNS = (
    "finding",
    "user_id",
    "tokenization_id",
    "wallet",
    "kyc_approved",
    "bought",
    "paid",
    "difference",
    "topup",
    "db_holding",
    "investments",
    "transactions",
    "note",
)

Units = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,77})$")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
Hash = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransferModel(_Strict):
    tx_hash: Hash
    log_index: int = Field(ge=0)
    block: int = Field(ge=0)
    sender: Address
    recipient: Address
    amount: Units


class RowModel(_Strict):
    finding: Finding
    users: list[Identifier]
    tokenization_id: Identifier
    wallet: Address | None
    kyc_approved: bool
    bought: Units
    paid: Units
    difference: Annotated[str, Field(pattern=r"^-?(0|[1-9][0-9]{0,77})$")]
    topup: Units
    db_holding: Units
    amount_minor: int = Field(ge=0, le=2**63 - 1)
    investments: list[Annotated[str, Field(min_length=1, max_length=128)]]
    transfers: list[TransferModel]
    note: Annotated[str, Field(max_length=1000)]

    @model_validator(mode="after")
    def _consistent(self) -> RowModel:
        bought, paid = int(self.bought), int(self.paid)
        if int(self.difference) != paid - bought:
            raise ValueError("difference is not paid - bought")
        if int(self.topup) != (bought - paid if self.finding.tops_up else 0):
            raise ValueError("topup is not bought - paid (or 0 when nothing is owed)")
        if paid != sum(int(t.amount) for t in self.transfers):
            raise ValueError("paid is not the sum of the transfers")
        if self.finding.tops_up and not 0 <= paid < bought:
            raise ValueError(f"{self.finding} needs paid below bought")
        if self.finding is Finding.OVERPAID and paid <= bought:
            raise ValueError("overpaid needs paid above bought")
        if (self.finding is Finding.UNMATCHED) != (not self.users):
            raise ValueError("an unmatched row names no investor; every other row does")
        if self.finding is not Finding.AMBIGUOUS and len(self.users) > 1:
            raise ValueError("only an ambiguous row names several investors")
        return self


class TokenModel(_Strict):
    address: Address
    decimals: int = Field(ge=0, le=255)


class AuditModel(_Strict):
    format: str = Field(pattern=f"^{FORMAT}$")
    version: int = Field(ge=1, le=1)
    audit_id: uuid.UUID
    chain_id: int = Field(gt=0)
    from_block: int = Field(ge=0)
    to_block: int = Field(ge=0)
    old_wallets: list[Address]
    tokens: dict[Identifier, TokenModel]
    summary: dict[str, Any]
    rows: list[RowModel]

    @model_validator(mode="after")
    def _each_pair_once(self) -> AuditModel:
        seen: set[tuple[str, str]] = set()
        for row in self.rows:
            if row.tokenization_id not in self.tokens:
                raise ValueError(f"row of unknown tokenization {row.tokenization_id}")
            for user in row.users:
                if (user, row.tokenization_id) in seen:
                    raise ValueError(f"{user} has two rows in {row.tokenization_id}")
                seen.add((user, row.tokenization_id))
        return self


@dataclass(frozen=True)
class Audit:
    """An audit's parameters and rows, as written and as read back."""

    audit_id: uuid.UUID
    chain_id: int
    from_block: int
    to_block: int
    old_wallets: list[str]
    tokens: dict[str, tuple[str, int]]  # tokenization id -> (token address, decimals)
    rows: list[Row]

    @classmethod
    def create(
        cls,
        *,
        chain_id: int,
        from_block: int,
        to_block: int,
        old_wallets: list[str],
        tokens: dict[str, tuple[str, int]],
        rows: list[Row],
    ) -> Audit:
        draft = cls(uuid.UUID(int=0), chain_id, from_block, to_block, old_wallets, tokens, rows)
        body = draft.document()
        del body["audit_id"]
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return cls(
            uuid.uuid5(NAMESPACE, digest), chain_id, from_block, to_block, old_wallets, tokens, rows
        )

    def summary(self) -> dict[str, Any]:
        rows = self.rows
        investors = Counter[str]()
        for r in rows:
            investors[r.finding.value] += len(r.users)
        unmatched = [r for r in rows if r.finding is Finding.UNMATCHED]
        return {
            "investors": sum(len(r.users) for r in rows),
            "investors_by_finding": dict(sorted(investors.items())),
            "rows_by_finding": dict(sorted(Counter(r.finding.value for r in rows).items())),
            "ambiguous_investors": investors[Finding.AMBIGUOUS.value],
            "investments": sum(len(r.investments) for r in rows),
            "transfers": sum(len(r.transfers) for r in rows),
            "bought": str(sum(r.bought for r in rows)),
            "paid": str(sum(r.paid for r in rows)),
            "owed": str(sum(r.topup for r in rows)),
            "overpaid": str(sum(r.difference for r in rows if r.finding is Finding.OVERPAID)),
            "unmatched_transfers": sum(len(r.transfers) for r in unmatched),
            "unmatched_amount": str(sum(r.paid for r in unmatched)),
        }

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 1,
            "audit_id": str(self.audit_id),
            "chain_id": self.chain_id,
            "from_block": self.from_block,
            "to_block": self.to_block,
            "old_wallets": self.old_wallets,
            "tokens": {k: {"address": a, "decimals": d} for k, (a, d) in self.tokens.items()},
            "summary": self.summary(),
            "rows": [_row_document(r) for r in self.rows],
        }

    def write(self, prefix: Path) -> tuple[Path, Path]:
        """``prefix.json`` and ``prefix.csv``; returns both paths."""
        json_path, csv_path = prefix.with_suffix(".json"), prefix.with_suffix(".csv")
        json_path.write_text(json.dumps(self.document(), indent=1) + "\n", encoding="utf-8")
        with csv_path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(_csv_row(r) for r in self.rows)
        return json_path, csv_path

    def render(self, *, table_limit: int | None = None) -> str:
        s = self.summary()
        lines = [
            f"audit {self.audit_id}: chain {self.chain_id}, blocks {self.from_block}-"
            f"{self.to_block}, old wallets {', '.join(self.old_wallets)}",
            f"investors {s['investors']}, investments {s['investments']}, "
            f"transfers {s['transfers']}",
        ]
        lines += [f"  {k:<15} {v:>6}" for k, v in s["investors_by_finding"].items()]
        lines.append(
            f"bought {s['bought']}, paid {s['paid']}, owed {s['owed']}, over-paid "
            f"{s['overpaid']}, unmatched {s['unmatched_transfers']} transfers of "
            f"{s['unmatched_amount']} (base units)"
        )
        shown = self.rows if table_limit is None else self.rows[:table_limit]
        lines.append(f"{'finding':<15} {'investor':<40} {'tokenization':<14} {'difference':>28}")
        lines += [
            f"{r.finding.value:<15} {r.user_id or r.wallet or '':<40} "
            f"{r.tokenization_id:<14} {r.difference:>28}"
            for r in shown
        ]
        if len(shown) < len(self.rows):
            lines.append(f"... {len(self.rows) - len(shown)} more rows in the files")
        return "\n".join(lines)


def _row_document(r: Row) -> dict[str, Any]:
    return {
        "finding": r.finding.value,
        "users": list(r.users),
        "tokenization_id": r.tokenization_id,
        "wallet": r.wallet,
        "kyc_approved": r.kyc_approved,
        "bought": str(r.bought),
        "paid": str(r.paid),
        "difference": str(r.difference),
        "topup": str(r.topup),
        "db_holding": str(r.db_holding),
        "amount_minor": r.amount_minor,
        "investments": list(r.investments),
        "transfers": [
            {
                "tx_hash": t.tx_hash,
                "log_index": t.log_index,
                "block": t.block,
                "sender": t.sender,
                "recipient": t.recipient,
                "amount": str(t.amount),
            }
            for t in r.transfers
        ],
        "note": r.note,
    }


def _csv_row(r: Row) -> list[str]:
    return [
        r.finding.value,
        r.user_id,
        r.tokenization_id,
        r.wallet or "",
        "yes" if r.kyc_approved else "no",
        str(r.bought),
        str(r.paid),
        str(r.difference),
        str(r.topup),
        str(r.db_holding),
        str(len(r.investments)),
        " ".join(f"{t.tx_hash}:{t.log_index}" for t in r.transfers),
        r.note,
    ]


def read(path: Path) -> Audit:
    """The audit in ``path`` (its JSON file), or ``InvalidInput`` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read audit file {path}: {exc}") from None
    try:
        model = AuditModel.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise InvalidInput(
            f"{path} is not a tokendist legacy audit: {where}: {err['msg']}"
        ) from None
    return Audit(
        audit_id=model.audit_id,
        chain_id=model.chain_id,
        from_block=model.from_block,
        to_block=model.to_block,
        old_wallets=model.old_wallets,
        tokens={k: (t.address, t.decimals) for k, t in model.tokens.items()},
        rows=[_row(r) for r in model.rows],
    )


def _row(m: RowModel) -> Row:
    return Row(
        finding=m.finding,
        users=tuple(m.users),
        tokenization_id=m.tokenization_id,
        wallet=m.wallet,
        kyc_approved=m.kyc_approved,
        bought=int(m.bought),
        paid=int(m.paid),
        db_holding=int(m.db_holding),
        amount_minor=m.amount_minor,
        investments=tuple(m.investments),
        transfers=[
            Transfer(
                tokenization_id=m.tokenization_id,
                tx_hash=t.tx_hash,
                log_index=t.log_index,
                block=t.block,
                sender=t.sender,
                recipient=t.recipient,
                amount=int(t.amount),
            )
            for t in m.transfers
        ],
        note=m.note,
    )
