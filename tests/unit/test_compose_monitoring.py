"""docker-compose.yml's monitoring (Prometheus and Grafana) held to the files and the code it
serves, without a Docker engine; beside ``test_compose.py``, which checks the rest.

Prometheus must load the repository's alert rules and scrape every tokendist process that
serves metrics; Grafana must be provisioned with that Prometheus and the dashboard; and the
dashboard and the alerts must query exactly what ``tokendist.core.metrics`` exports: a
metric renamed in code, or added without a panel, fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tests.unit.test_compose import ROOT, as_argv, env_anchor, service
from tokendist.core import metrics

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "tokendist.json"
# The tokendist services that serve /metrics on TOKENDIST_METRICS_PORT.
SCRAPED = ("relay", "consumer", "webhook", "chain-check")
# Series Prometheus makes itself, not the code.
PROMETHEUS_OWN = {"up", "ALERTS"}


def mounts(name: str) -> dict[str, Path]:
    """The service's bind mounts: container path -> host path (short syntax)."""
    found: dict[str, Path] = {}
    for volume in service(name).get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            found[target] = (ROOT / source).resolve()
    return found


def mounted_at(name: str, path: str) -> Path:
    """The host file or directory that ``name`` sees at ``path``."""
    for target, source in mounts(name).items():
        inside = PurePosixPath(path)
        if inside == PurePosixPath(target) or PurePosixPath(target) in inside.parents:
            return source / inside.relative_to(target)
    pytest.fail(f"{name}: nothing of the repository is mounted at {path}")


def load_yaml(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path.relative_to(ROOT)} does not exist"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def option(argv: list[str], flag: str) -> str | None:
    for arg in argv:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


@cache
def prometheus_config() -> dict[str, Any]:
    argv = as_argv(service("prometheus").get("command", []))
    path = option(argv, "--config.file") or "/etc/prometheus/prometheus.yml"
    return load_yaml(mounted_at("prometheus", path))


@cache
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def alert_exprs() -> list[str]:
    groups = load_yaml(MONITORING / "alerts.yml")["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


# ---------------------------------------------------------------- PromQL metric names

# Clauses whose parentheses hold label names, not series.
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label matchers, label
    lists, durations and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = LABEL_LISTS.sub(" ", text)
    return {
        m.group(1)
        for m in IDENTIFIER.finditer(text)
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS
    }


def test_series_names_reads_promql_as_expected() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(x_bucket{endpoint="a b"}[5m])))'
        " / ignoring(sender) group_left y_total offset 1h > 1e17 unless on (job) up"
        ' or vector(0) and count(ALERTS{alertstate="firing"})'
    )
    assert series_names(expr) == {"x_bucket", "y_total", "up", "ALERTS"}


@cache
def exported() -> dict[str, str]:
    """Every series name ``tokendist.core.metrics`` exposes -> its metric's name."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                for suffix in suffixes.get(family.type, ("",)):
                    names[family.name + suffix] = family.name
    return names


def test_the_dashboard_queries_exactly_the_metrics_the_code_exports() -> None:
    queried = set().union(*(series_names(e) for e in dashboard_exprs())) - PROMETHEUS_OWN
    unknown = queried - set(exported())
    assert not unknown, f"the dashboard queries metrics no code exports: {sorted(unknown)}"
    left_out = set(exported().values()) - {exported()[name] for name in queried}
    assert not left_out, f"exported metrics without a panel: {sorted(left_out)}"


def test_the_alerts_query_only_metrics_the_code_exports() -> None:
    queried = set().union(*(series_names(e) for e in alert_exprs())) - PROMETHEUS_OWN
    unknown = queried - set(exported())
    assert not unknown, f"alerts.yml queries metrics no code exports: {sorted(unknown)}"


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: apt-get install prometheus (Debian); make lint needs it")
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- Prometheus


def test_prometheus_loads_the_repositorys_alert_rules() -> None:
    rule_files = prometheus_config()["rule_files"]
    assert rule_files, "prometheus.yml loads no rules"
    loaded = [mounted_at("prometheus", path) for path in rule_files]
    assert loaded == [(MONITORING / "alerts.yml").resolve()]


def test_prometheus_scrapes_every_process_that_serves_metrics() -> None:
    port = env_anchor()["TOKENDIST_METRICS_PORT"]
    targets: dict[str, set[str]] = {}
    for job in prometheus_config()["scrape_configs"]:
        found = targets.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            found.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "compose's DNS answers A records"
            found.update(f"{name}:{dns['port']}" for name in dns["names"])
    for name in SCRAPED:
        assert targets.get(name) == {f"{name}:{port}"}, f"job {name}: {targets.get(name)}"
    # A scaled service: every replica answers to the service's name (no fixed target).
    assert "dns_sd_configs" in next(
        j for j in prometheus_config()["scrape_configs"] if j["job_name"] == "consumer"
    )


def test_prometheus_and_grafana_are_reachable_from_the_host_only() -> None:
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        published = [str(p) for p in service(name).get("ports", [])]
        assert published == [f"127.0.0.1:{port}:{port}"], f"{name}: {published}"


def test_prometheus_reports_ready_before_grafana_starts() -> None:
    test = " ".join(as_argv(service("prometheus")["healthcheck"]["test"]))
    assert "http://127.0.0.1:9090/-/ready" in test
    depends = service("grafana")["depends_on"]
    assert depends["prometheus"]["condition"] == "service_healthy"


# ---------------------------------------------------------------- Grafana


def provisioning(kind: str) -> list[dict[str, Any]]:
    folder = mounted_at("grafana", f"/etc/grafana/provisioning/{kind}")
    files = sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml"))
    assert files, f"no {kind} provisioning file in {folder.relative_to(ROOT)}"
    return [load_yaml(f) for f in files]


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    (datasource,) = [d for f in provisioning("datasources") for d in f["datasources"]]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090", "the compose service, its port"
    uids = {p["datasource"]["uid"] for p in panels()}
    uids |= {t["datasource"]["uid"] for p in panels() for t in p["targets"]}
    assert uids == {datasource["uid"]}, "every panel reads the provisioned data source"


def test_grafana_provisions_the_dashboard() -> None:
    (provider,) = [p for f in provisioning("dashboards") for p in f["providers"]]
    assert provider["type"] == "file"
    folder = mounted_at("grafana", provider["options"]["path"])
    assert folder == DASHBOARD.parent.resolve()
    assert sorted(folder.glob("*.json")) == [DASHBOARD]
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounted_at("grafana", home) == DASHBOARD.resolve()


def test_dashboard_panels_are_laid_out_and_distinct() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']}: wider than the grid"
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
