"""A chain of the benchmark's own for each block time: the stack's anvil binary, started on
a free port with ``--block-time`` and fresh state (nothing on disk), stopped after.

A chain per block time because the block time is the node's setting, and because a
fresh chain gives every block time the same starting point: the shared node is busy with
other engineers' transactions, which would share its blocks with ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tokendist.bench import sandbox
from tokendist.core.errors import SettingsError
from tokendist.sim.demo import free_port

CHAIN_ID = 31_337  # what the stack's node uses; tokenizations record it
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def find_binary(explicit: str | None, stack_dir: str | None) -> str:
    """``--anvil`` if given; else the binary the stack installed (``stack/stack.sh``'s
    ``anvil_bin``: npm's platform package under the stack's home); else ``anvil`` on PATH."""
    if explicit:
        return explicit
    if stack_dir:
        arch = "arm64" if platform.machine() == "aarch64" else "amd64"
        installed = (
            Path(stack_dir) / "npm/node_modules/@foundry-rs" / f"anvil-linux-{arch}/bin/anvil"
        )
        if installed.is_file():
            return str(installed)
    found = shutil.which("anvil")
    if found is None:
        raise SettingsError(
            "no anvil binary: give --anvil PATH, or set TOKENDIST_STACK_DIR "
            '(eval "$(tokendist stack env)") after `make stack-up` installed it'
        )
    return found


@contextlib.asynccontextmanager
async def started(binary: str, block_time_s: float | None, log_path: Path) -> AsyncIterator[str]:
    """A fresh anvil mining every ``block_time_s`` (None: a block per transaction, and
    only then); yields its RPC URL, stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mining = [] if block_time_s is None else ["--block-time", f"{block_time_s:g}"]
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(CHAIN_ID),
            *mining,
            # As the stack runs it: old states are never read, and kept they fill the disk.
            "--prune-history",
            "256",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _wait_ready(url, proc, log_path)
            yield url
        finally:
            if proc.returncode is None:
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.returncode is not None:
            text = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
            tail = text[-2000:]
            raise RuntimeError(f"anvil exited with {proc.returncode}: {tail}")
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            if await sandbox.rpc(url, "eth_chainId", []) == hex(CHAIN_ID):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"anvil on {url} not ready after {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)
