"""Static membership: the instance id reaches the consumer, and only ids the broker
accepts get past the settings (Kafka's rule for group.instance.id is that of topic names:
1 to 249 of ASCII letters, digits, '.', '_', '-', and not '.' or '..')."""

from __future__ import annotations

import asyncio
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokendist.cli.app import build_parser
from tokendist.consumer.membership import group_options
from tokendist.consumer.runner import Runner
from tokendist.core.settings import Settings, SettingsError, instance_id, load_settings

BASE = {"database_url": "postgresql://x", "kafka_bootstrap": "k:9092"}
LEGAL = string.ascii_letters + string.digits + "._-"
FUZZ_CASES = 500


def _kafka_accepts(value: str) -> bool:
    """Kafka's ``Topic.validate``, written out independently of ours."""
    return 0 < len(value) <= 249 and value not in {".", ".."} and all(c in LEGAL for c in value)


async def test_the_consumer_joins_with_the_instance_id_of_the_settings() -> None:
    static = Settings(**BASE, consumer_instance_id="tokendist-consumer-2")  # type: ignore[arg-type]
    consumer = Runner(static, asyncio.Event())._make_consumer()
    try:
        # aiokafka has no getter; this attribute is what its coordinator sends in JoinGroup.
        assert consumer._group_instance_id == "tokendist-consumer-2"
        assert consumer._group_id == static.consumer_group
    finally:
        await consumer.stop()
    assert group_options(static)["group_instance_id"] == "tokendist-consumer-2"
    assert group_options(Settings(**BASE))["group_instance_id"] is None  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["tokendist-consumer-0", "a", "pod.3_x-Y", "x" * 249, "...", "-"])
def test_legal_instance_ids_are_taken_as_given(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, setting in BASE.items():
        monkeypatch.setenv(f"TOKENDIST_{name.upper()}", setting)
    monkeypatch.setenv("TOKENDIST_CONSUMER_INSTANCE_ID", value)
    assert load_settings().consumer_instance_id == value


@pytest.mark.parametrize("value", ["", ".", "..", "pod 1", "pod/1", "pöd", "x" * 250, "a\n"])
def test_an_illegal_instance_id_stops_with_the_variable_named(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, setting in BASE.items():
        monkeypatch.setenv(f"TOKENDIST_{name.upper()}", setting)
    monkeypatch.setenv("TOKENDIST_CONSUMER_INSTANCE_ID", value)
    with pytest.raises(SettingsError, match=r"TOKENDIST_CONSUMER_INSTANCE_ID: .*1 to 249"):
        load_settings()


def test_consume_takes_the_id_as_a_flag_and_refuses_an_illegal_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["consume", "--instance-id", "pod-0"])
    assert args.instance_id == "pod-0"
    assert build_parser().parse_args(["consume"]).instance_id is None
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["consume", "--instance-id", "pod 0"])
    assert exit_.value.code == 2
    assert "--instance-id: an instance id is 1 to 249" in capsys.readouterr().err


@settings(max_examples=FUZZ_CASES, deadline=None)
@given(st.text(alphabet=st.sampled_from([*LEGAL[:5], ".", "_", "-", " ", "é", "/"]), max_size=8))
def test_instance_id_agrees_with_kafkas_rule(value: str) -> None:
    if _kafka_accepts(value):
        assert instance_id(value) == value
    else:
        with pytest.raises(ValueError, match="1 to 249"):
            instance_id(value)
