"""Only real payments pay: an event must be the confirmed payment PostgreSQL holds."""

from __future__ import annotations

import pytest

from tests.unit.members import confirmation_of
from tests.unit.test_schemas import with_data
from tokendist.consumer import authority
from tokendist.core.errors import InvalidEvent
from tokendist.schemas import parse_event

EVENT = parse_event(with_data())


def test_the_confirmed_payment_itself_passes() -> None:
    authority.check(confirmation_of(EVENT), EVENT)
    authority.check(confirmation_of(EVENT, keep_payload=False), EVENT)


def test_an_event_no_payment_confirmed_is_refused() -> None:
    with pytest.raises(InvalidEvent) as refused:
        authority.check(None, EVENT)
    assert refused.value.reason == "unconfirmed_payment"


FORGEABLE = {
    "user_id": "user-2",
    "investment_id": "inv-2",
    "tokenization_id": "tok-2",
    "property_id": "prop-2",
    "tokens": "7000000000000000000",
    "amount_minor": 1,
    "currency": "USD",
    "wallet_address": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "provider": "stripe",
    "provider_reference": "T999",
}


@pytest.mark.parametrize("field", sorted(FORGEABLE))
def test_any_field_changed_from_the_confirmed_payment_is_refused_by_name(field: str) -> None:
    forged = parse_event(with_data(**{field: FORGEABLE[field]}))
    forged = forged.model_copy(update={"event_id": EVENT.event_id})
    with pytest.raises(InvalidEvent) as refused:
        authority.check(confirmation_of(EVENT), forged)
    assert refused.value.reason == "payment_mismatch"
    assert refused.value.detail.endswith(f"in: {field}")


def test_another_event_id_on_the_same_row_is_refused() -> None:
    other = parse_event(with_data())
    with pytest.raises(InvalidEvent, match="event_id"):
        authority.check(confirmation_of(EVENT), other)


def test_rows_without_a_payload_still_compare_their_columns() -> None:
    forged = parse_event(with_data(tokens="7000000000000000000"))
    with pytest.raises(InvalidEvent, match="tokens"):
        authority.check(confirmation_of(EVENT, keep_payload=False), forged)
