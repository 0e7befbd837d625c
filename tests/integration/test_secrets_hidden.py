"""Secrets given as ``TOKENDIST_<NAME>_FILE`` (and in URLs) work, and never appear in what
the commands show: ``status``, the logs (at DEBUG), ``/metrics``, an error line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from eth_account import Account

from tests.integration import harness
from tests.integration import webhook_harness as wh
from tokendist.core.settings import Settings


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def planted(settings: Settings, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The environment of a deployment whose every secret is planted (a unique marker),
    most of them in files; and the planted values."""
    mark = uuid.uuid4().hex[:10]
    operator_key = "0x" + bytes(Account.create().key).hex()
    secrets = {
        "DATABASE_URL": _with_password(settings.database_url, "tokendist", f"pg-{mark}"),
        "PAYSTACK_SECRET_KEY": f"sk_live_{mark}paystack",
        "CHECKOUT_API_KEY": f"checkout-{mark}",
        "RPC_AUTH_HEADER": f"X-Api-Key: header-{mark}",
        "OPERATOR_KEY": operator_key,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENDIST_")}
    env |= {k: v for k, v in settings.as_env().items() if k[len("TOKENDIST_") :] not in secrets}
    for name, value in secrets.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n", encoding="utf-8")
        env[f"TOKENDIST_{name}_FILE"] = str(path)
    assert settings.rpc_url is not None
    # anvil ignores credentials: they only have to travel, and stay unseen.
    env["TOKENDIST_RPC_URL"] = _with_password(settings.rpc_url, "rpc", f"rpc-{mark}")
    shown = [f"pg-{mark}", f"{mark}paystack", f"checkout-{mark}", f"header-{mark}", f"rpc-{mark}"]
    return env, [*shown, operator_key[2:]]


async def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tokendist.cli", "--log-level", "DEBUG", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


async def test_status_logs_metrics_and_errors_never_show_a_secret(
    planted: tuple[dict[str, str], list[str]], tmp_path: Path
) -> None:
    env, secrets = planted
    outputs = []
    code, text = await _run(env, "status")
    assert code == 0, text
    outputs.append(text)
    # An outage: one error line, exit 1.
    code, text = await _run(env | {"TOKENDIST_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "status")
    assert code == 1, text
    assert "tokendist: error:" in text
    outputs.append(text)
    # The receiver with its metrics: its log and /metrics after a request.
    with wh.free_socket() as a, wh.free_socket() as b:
        port, metrics_port = a.getsockname()[1], b.getsockname()[1]
    served = env | {
        "TOKENDIST_WEBHOOK_PORT": str(port),
        "TOKENDIST_METRICS_PORT": str(metrics_port),
    }
    log = tmp_path / "webhook.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 -- started once, waited for below
            [sys.executable, "-m", "tokendist.cli", "--log-level", "DEBUG", "webhook"],
            env=served,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await harness.wait_until(lambda: wh.up(session, base), what="tokendist webhook")
            async with session.post(f"{base}/webhooks/paystack", data=b"{}") as resp:
                assert resp.status == 401
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                outputs.append(await resp.text())
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
    outputs.append(log.read_text(encoding="utf-8"))
    assert "webhook_rejected" in outputs[-1]
    leaks = [(s, i) for i, text in enumerate(outputs) for s in secrets if s in text]
    assert leaks == []
