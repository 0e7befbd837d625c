"""The repository's alert rules in a real Prometheus, scraping a running relay and
consumer (each its own process, so its numbers are its own).

The rules are ``monitoring/alerts.yml`` with only each ``for`` shortened to 2 s: every
expression and threshold is production's. Two alerts are induced: a record whose credit
keeps failing is parked after its attempts (``RecordsParkedAfterErrors``), and the only
relay stops (``NoRelayLeading``: the consumer still exports the leader gauge at 0).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from tests.integration import harness
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml"


def _rules_with_short_for(into: Path) -> Path:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path = into / "alerts.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextmanager
def prometheus(targets: dict[str, int]) -> Iterator[str]:
    """A Prometheus scraping ``targets`` (job: port) every second; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install it with 'apt-get install prometheus' (Debian)")
    with tempfile.TemporaryDirectory(prefix="tokendist-prometheus-") as tmp:
        folder = Path(tmp)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(_rules_with_short_for(folder))],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = harness.free_port()
        with open(folder / "prometheus.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                proc.terminate()
                proc.wait(timeout=30)


async def _api(url: str, path: str, **params: str) -> Any:
    """The answer's data; None while Prometheus is starting (refused, or 503)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/api/v1/{path}", params=params) as resp,
        ):
            return (await resp.json())["data"] if resp.status == 200 else None
    except aiohttp.ClientConnectionError:
        return None


async def firing(url: str) -> dict[str, dict[str, str]]:
    """Firing alerts by name (their labels)."""
    data = await _api(url, "alerts")
    alerts = data["alerts"] if data else []
    return {a["labels"]["alertname"]: a["labels"] for a in alerts if a["state"] == "firing"}


async def test_prometheus_fires_the_repositorys_alerts_on_a_parked_record_and_no_relay(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    relay_port, consumer_port = harness.free_port(), harness.free_port()
    relay_settings = settings.model_copy(update={"metrics_port": relay_port})
    consumer_settings = settings.model_copy(
        update={"metrics_port": consumer_port, "park_after_errors": 2}
    )
    await harness.fail_credits(pool, of_user="user-0")

    # Each its own process, so each exports its own numbers (gauges other tests of this
    # process set, a chain check's timestamp, would fire alerts of their own).
    consumer = harness.Process(consumer_settings, "consume")
    relay = harness.Process(relay_settings, "relay")
    try:
        with prometheus({"relay": relay_port, "consumer": consumer_port}) as url:

            async def scraped_leading_relay_and_consumer() -> bool:
                leading = await _api(url, "query", query='tokendist_relay_leader{job="relay"} == 1')
                consumer_up = await _api(url, "query", query='up{job="consumer"} == 1')
                return bool(leading and leading["result"] and consumer_up and consumer_up["result"])

            await harness.wait_until(
                scraped_leading_relay_and_consumer, what="both scraped, the relay leading"
            )
            seen: dict[str, dict[str, str]] = {}

            async def quiet() -> bool:  # NoRelayLeading may fire before the first scrape
                seen.clear()
                seen.update(await firing(url))
                return seen == {}

            try:
                await harness.wait_until(quiet, what="no alert while a relay leads")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; still firing: {seen}") from None

            await harness.pay(pool, harness.payment(tokenization, 1, user=0))

            async def parked_alert() -> bool:
                return "RecordsParkedAfterErrors" in await firing(url)

            await harness.wait_until(parked_alert, what="RecordsParkedAfterErrors")
            alerts = await firing(url)
            assert alerts["RecordsParkedAfterErrors"]["job"] == "consumer"
            assert "NoRelayLeading" not in alerts
            reason = await pool.fetchval("SELECT reason FROM dead_letters")
            assert reason == "processing_error"
            relay.terminate()

            async def no_relay_alert() -> bool:
                return "NoRelayLeading" in await firing(url)

            await harness.wait_until(no_relay_alert, what="NoRelayLeading")
        consumer.terminate()
    finally:
        for process in (relay, consumer):
            if process.alive():  # the test failed: its error matters, not the exit code
                process.kill()
