"""Pure logic: the state machine's transitions, backoff, settings errors, DLQ headers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokendist.consumer.dlq import dlq_headers
from tokendist.consumer.states import TRANSITIONS, State, check_transition
from tokendist.core.retry import backoff
from tokendist.core.settings import Settings, SettingsError, load_settings


def test_a_signed_event_goes_back_only_to_received_and_a_confirmed_one_never() -> None:
    """Back to received only when its batch is abandoned (its bytes can never be mined):
    never straight back to signing, never once the chain paid it."""
    for state in (State.SIGNED, State.SUBMITTED, State.CONFIRMED, State.CREDITED):
        for earlier in (State.RECEIVED, State.AWAITING_KYC, State.SIGNED):
            if earlier is state or (earlier is State.RECEIVED and state.on_chain):
                continue
            with pytest.raises(ValueError, match="illegal transition"):
                check_transition(state, earlier)
    for state in (State.SIGNED, State.SUBMITTED):
        check_transition(state, State.RECEIVED)


def test_credited_is_final_and_only_confirmed_credits() -> None:
    assert TRANSITIONS[State.CREDITED] == frozenset()
    assert [s for s, nxt in TRANSITIONS.items() if State.CREDITED in nxt] == [State.CONFIRMED]


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff(attempt, 0.1, 2.0) for attempt in range(1, 60)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 1


def test_missing_settings_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKENDIST_DATABASE_URL", "TOKENDIST_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "TOKENDIST_DATABASE_URL is not set" in str(caught.value)
    assert "TOKENDIST_KAFKA_BOOTSTRAP is not set" in str(caught.value)


def test_chain_commands_name_the_missing_key_and_never_print_it() -> None:
    settings = Settings(
        database_url="postgresql://x", kafka_bootstrap="k:9092", rpc_url="http://node"
    )
    with pytest.raises(SettingsError, match="TOKENDIST_OPERATOR_KEY"):
        settings.require_chain()
    secret = Settings(
        database_url="postgresql://x", kafka_bootstrap="k:9092", operator_key="0xdeadbeef"
    )
    assert "deadbeef" not in repr(secret)
    assert "deadbeef" not in str(secret.model_dump())


def test_bad_setting_value_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("TOKENDIST_KAFKA_BOOTSTRAP", "k:9092")
    monkeypatch.setenv("TOKENDIST_CONFIRMATIONS", "0")
    with pytest.raises(SettingsError, match="TOKENDIST_CONFIRMATIONS: Input should be greater"):
        load_settings()


def test_dead_letter_headers_carry_the_reason_and_the_origin() -> None:
    record = SimpleNamespace(
        topic="payments",
        partition=3,
        offset=41,
        timestamp=17,
        headers=[("event_id", b"e1"), ("dlq.reason", b"stale")],
    )
    headers = dict(dlq_headers(record, "invalid_schema", "x" * 5000))
    assert headers["dlq.reason"] == b"invalid_schema"
    assert headers["dlq.original.partition"] == b"3"
    assert headers["dlq.original.offset"] == b"41"
    assert headers["event_id"] == b"e1"
    assert len(headers["dlq.detail"]) == 1000
