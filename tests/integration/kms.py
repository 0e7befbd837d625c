"""local-kms (the AWS KMS API) for the signer tests: the stack's own, or one a test
starts, stops and starts again on its own data directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import free_port, wait_until
from tokendist.custody import kms

REGION = "us-east-1"


def binary() -> str:
    """The local-kms the stack built (``$TOKENDIST_STACK_DIR/go/bin``), else one on PATH."""
    stack_dir = os.environ.get("TOKENDIST_STACK_DIR")
    if stack_dir and (Path(stack_dir) / "go/bin/local-kms").is_file():
        return str(Path(stack_dir) / "go/bin/local-kms")
    found = shutil.which("local-kms")
    if found is None:
        pytest.fail(
            'no local-kms: `make stack-up` builds it, then eval "$(stack/stack.sh env)"',
            pytrace=False,
        )
    return found


def client(endpoint_url: str) -> Any:
    return kms.client(endpoint_url, REGION, timeout_s=5.0)


async def create_key(endpoint_url: str) -> str:
    """A new secp256k1 signing key, made through the KMS API as an operator would."""
    return await kms.create_key(client(endpoint_url))


class LocalKms:
    """A local-kms process of a test's own: ``stop`` and ``start`` keep its keys."""

    def __init__(self, data: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._data = data
        self._log = log
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PORT": str(self.port),
            "KMS_REGION": REGION,
            "KMS_DATA_PATH": str(self._data),
            "KMS_SEED_PATH": str(self._data / "seed.yaml"),
        }
        with self._log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                binary(), env=env, stdout=log, stderr=log
            )
        await wait_until(self._answers, timeout=30, what="local-kms to answer")

    async def _answers(self) -> bool:
        try:
            await asyncio.to_thread(client(self.url).list_keys)
        except Exception:  # any failure means: not up yet
            return False
        return True

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None


@contextlib.asynccontextmanager
async def started(tmp: Path) -> AsyncIterator[LocalKms]:
    server = LocalKms(tmp / "kms", tmp / "kms.log")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
