"""Relay and consumers as separate OS processes, as they run in production.

Separate processes matter for the numbers: each has its own interpreter and GIL, and its
peak memory can be read from /proc without counting the benchmark's own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from tokendist.core.settings import Settings

LOG_TAIL_BYTES = 4000


class Service:
    """``python -m tokendist.cli <command>``; its JSON log lines go to ``log_path``.

    Logs go to a file rather than a pipe: nobody reads a pipe while the benchmark runs,
    and a full pipe would block the service mid-measurement.
    """

    def __init__(self, settings: Settings, command: str, log_path: Path, log_level: str) -> None:
        self.name = f"{command}:{log_path.stem}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
            [sys.executable, "-m", "tokendist.cli", "--log-level", log_level, command],
            env={**os.environ, **settings.as_env()},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_kib(self) -> int | None:
        """VmHWM: the most resident memory the process ever had (None once it exited)."""
        return self._status_kib("VmHWM:")

    def rss_kib(self) -> int | None:
        """VmRSS: resident memory now (None once it exited)."""
        return self._status_kib("VmRSS:")

    def _status_kib(self, field: str) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith(field):
                return int(line.split()[1])  # "VmHWM:   123456 kB"
        return None

    async def stop(self, timeout_s: float) -> int:
        """SIGTERM (the graceful path under test), SIGKILL if it overstays ``timeout_s``."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = await asyncio.to_thread(self.proc.wait, 10)
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no leaving the group (a crash, as churn wants)."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def log_tail(self) -> str:
        data = self.log_path.read_bytes()
        return data[-LOG_TAIL_BYTES:].decode("utf-8", "replace")


def check_alive(services: list[Service]) -> None:
    """A service that died mid-run invalidates the run: stop with its last words."""
    for service in services:
        if not service.alive():
            raise RuntimeError(
                f"{service.name} exited with {service.proc.returncode}; "
                f"log {service.log_path}:\n{service.log_tail()}"
            )
