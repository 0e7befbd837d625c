"""Session-wide: the test log's header names the real services the suite runs against."""

from __future__ import annotations

import glob
import os
import re

import pytest

from tokendist.core.settings import secret_values


def kafka_version() -> str:
    """The version the broker itself reported at start-up (its server log)."""
    stack = os.environ.get("TOKENDIST_STACK_DIR")
    if not stack:
        return "unknown (not the local stack)"
    logs = glob.glob(f"{stack}/logs/kafka-*/server.log")
    for path in sorted(logs, key=os.path.getmtime, reverse=True):  # the running mode's first
        with open(path, encoding="utf-8", errors="replace") as log:
            found = re.findall(r"Kafka version: (\S+)", log.read())
        if found:
            return f"Apache Kafka {found[-1]} (reported by the broker, {path})"
    return "unknown (no broker log)"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Written even under -q (a report header is not), so every CI log names the broker.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or hasattr(session.config, "workerinput"):
        return  # xdist workers: the controller writes it once
    bootstrap = os.environ.get("TOKENDIST_KAFKA_BOOTSTRAP", "unset")
    reporter.write_line(f"kafka: {bootstrap}, {kafka_version()}")
    for what, name in (("postgresql", "DATABASE_URL"), ("ethereum node", "RPC_URL")):
        reporter.write_line(f"{what}: {_masked(os.environ.get(f'TOKENDIST_{name}', 'unset'))}")


def _masked(text: str) -> str:
    """``text`` without the passwords of the secured stack's URLs."""
    for secret in secret_values(os.environ):
        text = text.replace(secret, "***")
    return text
