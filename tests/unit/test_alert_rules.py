"""Every alert of ``monitoring/alerts.yml`` is unit-tested by promtool both firing and held
back (``monitoring/alerts_test.yml``, run by ``make alerts-check``), and has its one-line
runbook in the README: a new alert cannot ship without either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "monitoring/alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load((ROOT / "monitoring/alerts_test.yml").read_text())["tests"]
    return [case for test in tests for case in test["alert_rule_test"]]


def test_every_alert_is_tested_firing_and_held_back() -> None:
    cases = _cases()
    for rule in _alerts():
        name = rule["alert"]
        outcomes = {bool(c["exp_alerts"]) for c in cases if c["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: needs a firing and a silent case"


def test_every_alert_names_its_runbook_line_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    runbook = readme.split("### Alert rules", 1)[1].split("\n## ", 1)[0]
    for rule in _alerts():
        name = rule["alert"]
        assert rule["annotations"]["runbook"] == f"README.md#alert-rules {name}"
        assert f"| `{name}` |" in runbook, f"{name}: no runbook line in the README"
        assert rule["labels"]["severity"] in {"page", "ticket"}
