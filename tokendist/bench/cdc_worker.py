"""A Kafka Connect worker running the shipped Debezium outbox connector for one database
and topic, driven through ``stack/stack.sh`` (which renders ``stack/cdc/*.properties``):
the CDC benchmark and the CDC integration test run workers of their own beside the
stack's, each with its own directory, REST port, replication slot and publication."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from tokendist.core.settings import Settings

STACK_SCRIPT = Path(__file__).resolve().parents[2] / "stack" / "stack.sh"
DROP_SLOT = """
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1
"""


class ConnectWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        stack_dir: str,
        home: Path,
        name: str,
        rest_port: int,
        offset_flush_ms: int = 1000,
    ) -> None:
        db = urlsplit(settings.database_url)
        kafka_port = settings.bootstrap_servers[0].rsplit(":", 1)[1]
        self.name = name  # the connector's, and its slot's and publication's
        self.home = home
        self.database_url = settings.database_url
        self.env = {
            "TOKENDIST_STACK_HOME": stack_dir,
            "TOKENDIST_PG_PORT": str(db.port or 5432),
            "TOKENDIST_KAFKA_PORT": kafka_port,
            "TOKENDIST_CDC_HOME": str(home),
            "TOKENDIST_CDC_NAME": name,
            "TOKENDIST_CDC_DATABASE": db.path.lstrip("/"),
            "TOKENDIST_CDC_TOPIC": settings.topic,
            "TOKENDIST_CDC_REST_PORT": str(rest_port),
            "TOKENDIST_CDC_OFFSET_FLUSH_MS": str(offset_flush_ms),
            "TOKENDIST_CDC_HEARTBEAT_MS": "1000",
            "TOKENDIST_TOPIC_PARTITIONS": str(settings.topic_partitions),
        }

    async def start(self) -> None:
        """Start the worker; returns once the connector and its task are RUNNING."""
        await self._stack("start-service", "cdc")

    async def kill(self) -> None:
        """SIGKILL: no offset flush, no clean slot release (a crash)."""
        await self._stack("kill-cdc")

    async def stop(self) -> None:
        await self._stack("stop-service", "cdc")

    async def drop_slot(self) -> None:
        """The slot holds WAL (and blocks DROP DATABASE) until dropped: after ``stop``."""
        conn = await asyncpg.connect(self.database_url)
        try:
            for _ in range(50):  # a killed worker's walsender takes a moment to let go
                try:
                    await conn.execute(DROP_SLOT, self.name)
                    return
                except asyncpg.ObjectInUseError:
                    await asyncio.sleep(0.2)
            await conn.execute(DROP_SLOT, self.name)
        finally:
            await conn.close()

    def log_tail(self, lines: int = 30) -> str:
        log = self.home / "connect.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    async def _stack(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(STACK_SCRIPT),
            *args,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"stack.sh {' '.join(args)} failed:\n{out.decode()[-3000:]}")
