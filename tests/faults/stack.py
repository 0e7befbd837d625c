"""The stack under test, taken from the environment (``eval "$(stack/stack.sh env)"``).

Every service fault goes through ``stack/stack.sh`` with the stack's own home and ports,
so a private fault stack (``TOKENDIST_STACK_HOME=.stack-faults ...``) and CI's standard
one are driven by the same code, and the shared developer stack is never touched by
accident: nothing here has a default address.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration import harness

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "stack" / "stack.sh"
CTL_TIMEOUT_S = 240.0
REQUIRED = (
    "TOKENDIST_STACK_DIR",
    "TOKENDIST_DATABASE_URL",
    "TOKENDIST_KAFKA_BOOTSTRAP",
    "TOKENDIST_RPC_URL",
)


class StackError(Exception):
    """The environment does not describe a stack, or stack.sh failed."""


def _port(url: str) -> int:
    port = urlsplit(url if "//" in url else f"//{url}").port
    if port is None:
        raise StackError(f"no port in {url!r}")
    return port


@dataclass(frozen=True)
class Stack:
    home: Path
    database_url: str  # the admin database; each run clones its own from the template
    kafka_bootstrap: str
    rpc_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Stack:
        env = os.environ if environ is None else environ
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing:
            raise StackError(
                f"{', '.join(missing)} not set. Fault runs restart services, so they need a "
                "stack of their own, e.g.:\n  export TOKENDIST_STACK_HOME=$PWD/.stack-faults "
                "TOKENDIST_PG_PORT=26432 TOKENDIST_KAFKA_PORT=29592 TOKENDIST_ANVIL_PORT=28645\n"
                '  bash stack/stack.sh up && eval "$(bash stack/stack.sh env)"'
            )
        return cls(
            home=Path(env["TOKENDIST_STACK_DIR"]),
            database_url=env["TOKENDIST_DATABASE_URL"],
            kafka_bootstrap=env["TOKENDIST_KAFKA_BOOTSTRAP"],
            rpc_url=env["TOKENDIST_RPC_URL"],
        )

    @property
    def brokers(self) -> int:
        return len([s for s in self.kafka_bootstrap.split(",") if s.strip()])

    def script_env(self) -> dict[str, str]:
        """What stack.sh needs to address *this* stack (it reads no URLs, only these)."""
        first_broker = self.kafka_bootstrap.split(",")[0].strip()
        return {
            "TOKENDIST_STACK_HOME": str(self.home),
            "TOKENDIST_PG_PORT": str(_port(self.database_url)),
            "TOKENDIST_KAFKA_PORT": str(_port(first_broker)),
            "TOKENDIST_ANVIL_PORT": str(_port(self.rpc_url)),
        }

    def shell_prefix(self) -> str:
        """The environment part of a command line that reaches this stack again."""
        assigns = " ".join(f"{k}={v}" for k, v in self.script_env().items())
        return f'eval "$({assigns} bash stack/stack.sh env)" &&'

    async def ctl(self, *args: str) -> None:
        """Run ``stack.sh ARGS`` against this stack; raise with its output if it fails.

        A start is tried three times: stack.sh considers a process gone once its
        /proc cmdline is empty, but a big one (anvil with a large state) may still hold
        its port for a moment, and the start then refuses ("port ... is in use")."""
        attempts = 3 if args and args[0] in ("start-service", "start-broker") else 1
        for attempt in range(attempts):
            try:
                await self._ctl_once(*args)
                return
            except StackError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(2.0)

    async def _ctl_once(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(STACK_SCRIPT),
            *args,
            env={**os.environ, **self.script_env()},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=CTL_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise StackError(f"stack.sh {' '.join(args)}: no answer in {CTL_TIMEOUT_S}s") from None
        if proc.returncode != 0:
            tail = "\n".join(out.decode(errors="replace").splitlines()[-20:])
            raise StackError(f"stack.sh {' '.join(args)} exited {proc.returncode}:\n{tail}")

    async def heal(self) -> bool:
        """Start whatever is down (start-service is a no-op for a running service); returns
        whether anything was. A fault that could not bring its service back fails its own
        run as an ERROR, and must not turn the next runs into errors too."""
        try:
            await self._ctl_once("status")
            return False
        except StackError:
            for service in ("pg", "kafka", "anvil"):
                await self.ctl("start-service", service)
            return True

    async def reset_chain(self) -> None:
        """Restart anvil from genesis. Its ``--state`` file holds every block of every run
        and is rewritten each second: over hundreds of runs that alone saturates the node.
        Each run deploys its own contracts and funds its own keys, so nothing is lost, but
        it is for a stack of one's own: refused on the repository's default stack."""
        if self.home.resolve() == (REPO_ROOT / ".stack").resolve():
            raise StackError("refusing to wipe the chain of the shared stack in .stack")
        await self.ctl("stop-service", "anvil")
        (self.home / "anvil" / "state.json").unlink(missing_ok=True)
        await self.ctl("start-service", "anvil")

    async def rpc(self, method: str, *params: Any) -> Any:
        return await harness.rpc(self.rpc_url, method, list(params))


def local_stack() -> Stack:
    """The stack the environment names, for tests that restart its services; a test run
    without one fails saying how to start it."""
    try:
        return Stack.from_env()
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)
