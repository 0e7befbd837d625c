"""The exception tree is complete, and the Kafka adapter maps every call the relay and the
operator tools make (a dead broker is ``BrokerUnavailable``, never aiokafka's own error)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from tokendist.core import errors, kafka
from tokendist.core.errors import BrokerUnavailable, RecordRejected, TokendistError
from tokendist.core.settings import Settings

PACKAGES = ("tokendist",)


def _project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        names = [package] + [
            m.name for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        ]
        for name in names:
            if name.endswith(".__main__"):  # running it is what importing it does
                continue
            module = importlib.import_module(name)
            for cls in vars(module).values():
                if (
                    inspect.isclass(cls)
                    and issubclass(cls, BaseException)
                    and cls.__module__ == name
                ):
                    found[f"{name}.{cls.__qualname__}"] = cls
    return found


def _drawn() -> set[str]:
    """The class names drawn in the tree of the ``errors`` docstring."""
    tree = (errors.__doc__ or "").split("\n\n")[1].strip()
    root = tree.split()[0]
    return {root, *re.findall(r"[├└]── (\w+)", tree)}


def test_every_exception_the_project_defines_is_in_the_drawn_tree() -> None:
    found = _project_exceptions()
    assert len(found) > 15, "the walk found the tree's classes"
    outside = sorted(
        name
        for name, cls in found.items()
        if cls.__module__ != "tokendist.core.errors" or not issubclass(cls, TokendistError)
    )
    assert outside == [], "define these in tokendist.core.errors, in the tree"
    in_errors = {
        cls.__name__ for cls in found.values() if cls.__module__ == "tokendist.core.errors"
    }
    assert in_errors == _drawn(), "the docstring's tree draws exactly the classes defined"


def test_moved_exceptions_stay_importable_where_they_were() -> None:
    from tokendist.consumer.repository import StateConflict
    from tokendist.core.retry import StoppedWhileWaiting
    from tokendist.core.settings import SettingsError
    from tokendist.webhook.jsonbody import Unreadable

    moved = {StateConflict, StoppedWhileWaiting, SettingsError, Unreadable}
    assert all(issubclass(cls, TokendistError) for cls in moved)
    assert issubclass(Unreadable, ValueError)


class _DeadBroker:
    """Any client call answers as a broker that went away mid-command."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: object, **kwargs: object) -> Any:
            raise KafkaConnectionError(f"{name}: connection lost")

        return call


class _TooLarge:
    async def send_and_wait(self, *args: object, **kwargs: object) -> None:
        raise MessageSizeTooLargeError("the record is larger than the broker accepts")


TP = TopicPartition("payments", 0)
READER_CALLS: dict[str, Callable[[kafka.Reader], Awaitable[object]]] = {
    "beginning_offsets": lambda r: r.beginning_offsets([TP]),
    "end_offsets": lambda r: r.end_offsets([TP]),
    "offsets_for_times": lambda r: r.offsets_for_times({TP: 0}),
    "committed": lambda r: r.committed(TP),
    "commit": lambda r: r.commit({TP: 0}),
    "seek_to_beginning": lambda r: r.seek_to_beginning([TP]),
    "position": lambda r: r.position(TP),
    "getmany": lambda r: r.getmany(timeout_ms=1),
}


@pytest.mark.parametrize("call", READER_CALLS.values(), ids=READER_CALLS.keys())
async def test_every_reader_call_maps_a_lost_broker(
    call: Callable[[kafka.Reader], Awaitable[object]],
) -> None:
    reader = kafka.Reader(Settings(database_url="postgresql://x", kafka_bootstrap="x:9092"))
    reader.client = _DeadBroker()
    with pytest.raises(BrokerUnavailable, match="connection lost"):
        await call(reader)


async def test_sends_and_group_descriptions_map_the_broker_s_answers() -> None:
    message = kafka.Message(b"k", b"v", [])
    with pytest.raises(BrokerUnavailable):
        await kafka.send(_DeadBroker(), "payments", message)
    with pytest.raises(BrokerUnavailable):
        await kafka.send_batch(_DeadBroker(), "payments", [message])
    with pytest.raises(BrokerUnavailable):
        await kafka.group_members(_DeadBroker(), "group")
    with pytest.raises(RecordRejected):
        await kafka.send(_TooLarge(), "payments", message)
