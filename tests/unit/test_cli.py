"""The CLI's contract with a user: clear errors naming the variable, no secrets printed."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from tokendist.cli import app as cli
from tokendist.cli import errors as cli_errors
from tokendist.cli.app import build_parser, main
from tokendist.core.errors import (
    BrokerRefused,
    BrokerUnavailable,
    ChainUnavailable,
    DatabaseUnavailable,
    InvalidInput,
)


@pytest.mark.parametrize("command", [["relay"], ["consume"], ["db", "migrate"], ["status"]])
def test_missing_configuration_says_which_variables_to_set(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "TOKENDIST_DATABASE_URL is not set" in err
    assert "TOKENDIST_KAFKA_BOOTSTRAP is not set" in err
    assert "tokendist stack env" in err


def test_chain_commands_name_the_missing_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://nowhere/x")
    monkeypatch.setenv("TOKENDIST_KAFKA_BOOTSTRAP", "nowhere:9092")
    monkeypatch.setenv("TOKENDIST_RPC_URL", "http://nowhere:8545")
    assert main(["consume"]) == 2
    assert "set TOKENDIST_OPERATOR_KEY" in capsys.readouterr().err


def test_a_bad_value_is_explained_and_the_key_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://nowhere/x")
    monkeypatch.setenv("TOKENDIST_KAFKA_BOOTSTRAP", "nowhere:9092")
    monkeypatch.setenv("TOKENDIST_OPERATOR_KEY", "0xsecretsecret")
    monkeypatch.setenv("TOKENDIST_TOPIC_PARTITIONS", "zero")
    assert main(["relay"]) == 2
    err = capsys.readouterr().err
    assert "TOKENDIST_TOPIC_PARTITIONS: Input should be a valid integer" in err
    assert "secretsecret" not in err


def test_replay_needs_exactly_one_target() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay", "--earliest", "--fresh-group", "g"])
    args = build_parser().parse_args(["replay", "--to-offsets", "0:5,3:9", "--dry-run"])
    assert args.to_offsets == {0: 5, 3: 9}
    assert args.dry_run


# --- every command: one line, exit 2 for bad input (issue 12, part 6) ----------------------

NOWHERE = {
    "TOKENDIST_DATABASE_URL": "postgresql://tokendist@127.0.0.1:1/x",
    "TOKENDIST_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "TOKENDIST_RPC_URL": "http://127.0.0.1:1",
    "TOKENDIST_OPERATOR_KEY": "0x" + "11" * 32,
    "TOKENDIST_DEPLOYER_KEY": "0x" + "22" * 32,
}
WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
FUND_OVER_SUPPLY = ["--fund", "100", "--supply", "10"]
ERC3643 = ["--standard", "erc3643"]


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NOWHERE.items():
        monkeypatch.setenv(name, value)


def exit_code(argv: list[str]) -> int:
    """``main``'s answer, whether returned or argparse's SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--to-offsets", "abc"],
        ["replay", "--to-offsets", "0:-1"],
        ["replay", "--to-offsets", "0:1,0:2"],
        ["replay", "--to-timestamp", "yesterday"],
        ["replay", "--to-timestamp", "2026-01-01T00:00:00"],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", "--supply", "-5"],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", "--supply", "0"],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", "--fund", "0"],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", *FUND_OVER_SUPPLY],
        ["chain", "deploy", "--tokenization-id", "t 2", "--property-id", "p"],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p'; --"],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", "--decimals", "256"],
        ["chain", "rotate-operator", "--tokenization-id", "t", "--new-operator", "0x" + "0" * 40],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", *ERC3643],
        [
            "chain",
            "deploy",
            "--tokenization-id",
            "t",
            "--property-id",
            "p",
            *ERC3643,
            "--country",
            "0",
        ],
        ["chain", "deploy", "--tokenization-id", "t", "--property-id", "p", "--standard", "erc777"],
        [
            "chain",
            "deploy",
            "--tokenization-id",
            "t",
            "--property-id",
            "p",
            *ERC3643,
            "--country",
            "566",
            "--decimals",
            "19",
        ],
        ["kyc", "approve", "u1", "--country", "1000"],
        ["kyc", "approve", "u1", "--country", "NG"],
        ["kyc", "revoke", "user 1"],
        ["kyc", "revoke"],
        ["kyc", "approve", "user 1"],
        ["kyc", "approve", ""],
        ["kyc", "approve", "u" * 65],
        ["kyc", "approve", "u1", "--wallet", "0x" + "0" * 40],
        ["kyc", "approve", "u1", "--wallet", WALLET.replace("a", "A", 1)],  # bad checksum
        ["kyc", "approve", "u1", "--wallet", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"],
        ["dlq", "redrive", "zz"],
        ["dlq", "redrive", "3:"],
        ["dlq", "redrive"],
        ["dlq", "redrive", "0:1", "--all"],
        ["dlq", "list", "--limit", "0"],
        ["reconcile", "--grace", "nan"],
        ["chain-check", "--interval", "0"],
        ["chain-check", "--interval", "nan"],
        ["chain-check", "--interval", "3601"],
        ["verify", "--grace", "-1"],
        ["--log-level", "LOUD", "status"],
        ["demo", "--rate", "0"],
        ["simulate", "--tokenization-id", "t", "--users", "0"],
    ],
)
def test_bad_values_are_refused_at_parse_time(
    argv: list[str], nowhere: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every one of these used to reach a service (or a traceback); the services here are
    closed ports, so an exit 2 proves the refusal came before any connection."""
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(("tokendist", "usage:"))


def test_the_amounts_rule_is_the_deployers(nowhere: None) -> None:
    from tokendist.ops.deploy import amounts_problem

    assert amounts_problem(10, 100) == "--fund 100 must be positive and at most --supply 10"
    assert amounts_problem(10, 10) is None
    assert amounts_problem(10, None) is None
    assert amounts_problem(0, None) is not None


@pytest.mark.parametrize("key", ["0xnothex", "0x" + "00" * 32, "0x" + "ff" * 32, "12" * 31])
def test_a_malformed_operator_key_is_one_line_and_never_echoed(
    key: str, nowhere: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENDIST_OPERATOR_KEY", key)
    assert main(["consume"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tokendist: error: TOKENDIST_OPERATOR_KEY is not a private key "
        "(64 hex digits, 0x optional)\n"
    )


@pytest.mark.parametrize("secret", ["hello", "sk_live_", "pk_live_abc", "sk_live_a b"])
def test_the_webhook_refuses_a_secret_that_is_not_a_paystack_key(
    secret: str, nowhere: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENDIST_PAYSTACK_SECRET_KEY", secret)
    # An address no interface has: were the key accepted, binding fails instead of serving.
    monkeypatch.setenv("TOKENDIST_WEBHOOK_HOST", "203.0.113.1")
    assert main(["webhook"]) == 2
    err = capsys.readouterr().err
    assert "is not a Paystack secret key" in err
    assert secret not in err.replace("TOKENDIST_PAYSTACK_SECRET_KEY", "")


def test_addresses_are_checksummed_and_the_zero_address_refused() -> None:
    from tokendist.cli import inputs as cli_input

    assert cli_input.address(WALLET.lower()) == WALLET
    assert cli_input.address(WALLET) == WALLET
    for bad in ("0x" + "0" * 40, WALLET.replace("a", "A", 1), WALLET[:-1], WALLET[2:]):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_input.address(bad)


def test_a_dead_letter_nested_10000_deep_is_listed_without_recursion() -> None:
    from tokendist.ops.dlq_admin import Parked

    deep = b'{"data":' * 10_000 + b"1" + b"}" * 10_000
    line = Parked(0, 7, b"k", deep, [("dlq.reason", b"malformed_json")]).line()
    assert line.startswith("0:7  malformed_json")
    assert line.endswith("…")
    escaped = json.dumps({"event_type": "E", "data": {"user_id": "[[[[[[[[[["}}).encode()
    assert "user_id=[[[[[[[[[[" in Parked(0, 8, None, escaped, []).summary()


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (InvalidInput("no dead letter at 3:9"), 2, "no dead letter at 3:9"),
        (DatabaseUnavailable("OSError: refused"), 1, "is PostgreSQL up"),
        (BrokerUnavailable("down"), 1, "is Kafka up"),
        (BrokerRefused("GroupAuthorizationFailedError"), 1, "the ACLs of its principal"),
        (ChainUnavailable("down"), 1, "is the Ethereum node up"),
        (asyncpg.PostgresConnectionError("gone"), 1, "is PostgreSQL up"),
        (asyncpg.InterfaceError("closed"), 1, "is PostgreSQL up"),
        (asyncpg.UndefinedTableError("no users"), 2, "tokendist db migrate"),
        (KafkaConnectionError("no broker"), 1, "is Kafka up"),
        (aiohttp.ClientConnectionError("refused"), 1, "is the service it names up"),
        (ConnectionRefusedError(111, "refused"), 1, "ConnectionRefusedError"),
        (KeyError("surprise"), 1, "unexpected KeyError"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_the_boundary_maps_our_tree_and_raw_library_errors(
    exc: BaseException, code: int, says: str
) -> None:
    got, line = cli_errors.one_line(exc, ["s3cret"])
    assert got == code
    assert line.startswith("tokendist: error: ")
    assert says in line
    assert "\n" not in line


def test_the_boundary_masks_every_secret() -> None:
    _, line = cli_errors.one_line(ValueError("key 0xs3cret\nleaked"), ["0xs3cret", ""])
    assert "s3cret" not in line
    assert line == "tokendist: error: unexpected ValueError: key *** leaked; " + (
        "--log-level DEBUG shows where"
    )


# --- fuzzing the parsers -----------------------------------------------------------------

COMMANDS = [
    ["chain", "deploy"],
    ["chain", "rotate-operator"],
    ["kyc", "approve"],
    ["kyc", "revoke"],
    ["replay"],
    ["dlq", "list"],
    ["dlq", "redrive"],
    ["dlq"],
    ["redrive"],
    ["reconcile"],
    ["chain-check"],
    ["verify"],
    ["status"],
    ["consume"],
    ["relay"],
    ["webhook"],
    ["db", "migrate"],
    ["simulate"],
    ["demo"],
    ["chain"],
    ["kyc"],
    [],
]
OPTIONS = [
    "--tokenization-id", "--property-id", "--name", "--symbol", "--decimals", "--supply",
    "--fund", "--new-operator", "--wallet", "--earliest", "--to-timestamp", "--to-offsets",
    "--fresh-group", "--dry-run", "--reason", "--all", "--limit", "--grace", "--shared-chain",
    "--rate", "--count", "--users", "--seed", "--webhook-url", "--payments", "--consumers",
    "--log-dir", "--log-level", "--standard", "--country", "--interval", "--once", "-h", "--",
    "-",
]  # fmt: skip
NEAR_MISSES = [
    "-5", "0", "1", "10", "-0", "+5", "007", "1e3", "nan", "inf", "-inf", "1.5", str(2**256),
    "abc", "zz", "3:999999", "0:1,0:2", "0:1,", ":", "0:-1", "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00", "yesterday", "0001-01-01T00:00:00+00:00", WALLET, WALLET.lower(),
    "0x" + "0" * 40, "0x" + "0" * 39, "t 2", "it's", '"q"', "", " ", "\x00", "é", "u" * 65,
    "tok-1", "user-1", "DEBUG", "loud", "list", "redrive", "deploy",
]  # fmt: skip
_token = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(NEAR_MISSES), st.text(max_size=12))
_near_miss_argv = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(COMMANDS),
    st.lists(_token, max_size=8),
)
_any_argv = st.lists(st.text(max_size=16), max_size=6)
FUZZ_EXAMPLES = 2_500


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def test_fuzzed_argv_is_parsed_or_refused_with_exit_0_or_2() -> None:
    """Parse-only: the parser and the cross-argument checks, no handler runs."""
    ran = 0

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None)
    @given(st.one_of(_near_miss_argv, _any_argv))
    def parse(argv: list[str]) -> None:
        nonlocal ran
        ran += 1
        with _silenced():
            try:
                args = cli.parse(build_parser(), argv)
            except SystemExit as stop:
                refused = stop.code
            else:
                assert callable(args.handler)
                refused = None
        assert refused in (None, 0, 2)

    parse()
    print(f"parse fuzz: {ran} argv")  # noqa: T201 -- the case count is part of the report
    assert ran >= FUZZ_EXAMPLES


def test_fuzzed_argv_through_main_without_configuration_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole of ``main`` for the commands that talk to services: with no service
    configured every answer is exit 0 (help) or 2, and the working directory stays empty."""
    for name in [n for n in os.environ if n.startswith("TOKENDIST_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    ran = 0

    @settings(max_examples=FUZZ_EXAMPLES // 2, deadline=None, database=None)
    @given(_near_miss_argv.filter(lambda a: bool(a) and a[0] not in ("stack", "schemas", "bench")))
    def run(argv: list[str]) -> None:
        nonlocal ran
        ran += 1
        with _silenced():
            assert exit_code(argv) in (0, 2)

    run()
    print(f"main fuzz: {ran} argv")  # noqa: T201 -- the case count is part of the report
    assert ran >= FUZZ_EXAMPLES // 2
    assert list(tmp_path.iterdir()) == []
