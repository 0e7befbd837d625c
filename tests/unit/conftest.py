"""Unit tests are pure: none of them may see the developer's TOKENDIST_* environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENDIST_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fast_receipts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settler's receipt lookups sent at once: on the fakes there is nothing to gather
    them with."""
    from tokendist.consumer import head

    monkeypatch.setattr(head, "GATHER_S", 0)
