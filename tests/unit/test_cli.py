"""The CLI's contract with a user: clear errors naming the variable, no secrets printed."""

from __future__ import annotations

import pytest

from tokendist.cli import build_parser, main


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
    assert args.to_offsets == "0:5,3:9"
    assert args.dry_run
