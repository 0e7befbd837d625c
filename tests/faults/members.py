"""The system's processes: relays and consumers, each a real ``python -m tokendist.cli``
OS process, so SIGKILL means what it means in production (no cleanup, no flush).

Why not ``harness.Process``: it pipes stderr and reads it only at ``terminate``. A
consumer living through a whole fault run logs far more than a pipe buffer holds and
would block on its next log line, a hang the harness would then blame on the system.
Here each process logs to its own file, which is also what a failing run leaves behind.
The environment is built by ``harness.env_of`` exactly as for the integration tests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.faults.stack import REPO_ROOT
from tests.integration import harness
from tokendist.core.settings import Settings

TERM_TIMEOUT_S = 30.0
CLI_ERROR_EXIT = 2  # tokendist.cli.app: SettingsError / TokendistError, message on stderr


class Member:
    def __init__(
        self,
        name: str,
        role: str,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.role = role
        self.settings = settings
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        env = {**os.environ, **harness.env_of(settings), **(extra_env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokendist.cli", role],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.stopped_by_us = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def kill(self) -> None:
        self.stopped_by_us = True
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, TERM_TIMEOUT_S)
        self._log.close()

    async def terminate(self) -> int | None:
        """SIGTERM and wait; a member that does not drain in time is SIGKILLed and
        ``None`` returned (the caller records it: a hung shutdown is a finding)."""
        self.stopped_by_us = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, TERM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            await self.kill()
            return None
        self._log.close()
        return code

    def close(self) -> None:
        self._log.close()

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Fleet:
    """Every process of one run. ``anomalies`` collects what no fault explains: a member
    exiting on its own, or not draining on SIGTERM."""

    settings: Settings
    log_dir: Path
    relays: list[Member] = field(default_factory=list)
    consumers: list[Member] = field(default_factory=list)
    others: list[Member] = field(default_factory=list)  # under-priced member, crashers
    replayers: list[Member] = field(default_factory=list)  # members of fresh groups
    anomalies: list[str] = field(default_factory=list)
    error_exits: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def _spawn(
        self,
        role: str,
        *,
        settings: Settings | None = None,
        extra_env: dict[str, str] | None = None,
        label: str = "",
    ) -> Member:
        name = f"{role}{label}-{next(self._ids)}"
        settings = settings or self.settings
        if role == "consume":
            settings = settings.model_copy(
                update={"consumer_instance_id": self._free_instance_id(settings)}
            )
        return Member(name, role, settings, self.log_dir / f"{name}.log", extra_env)

    def _free_instance_id(self, settings: Settings) -> str:
        """The lowest ``member-N`` no live member of the group holds: a replacement for a
        killed member takes its id, and its partitions, back, as a restarted StatefulSet
        pod does; two live members never share one (they would fence each other)."""
        members = [*self.consumers, *self.others, *self.replayers]
        taken = {
            m.settings.consumer_instance_id
            for m in members
            if m.alive() and m.settings.consumer_group == settings.consumer_group
        }
        return next(f"member-{n}" for n in itertools.count() if f"member-{n}" not in taken)

    def start_relay(self) -> Member:
        member = self._spawn("relay")
        self.relays.append(member)
        return member

    def start_consumer(self, extra_env: dict[str, str] | None = None) -> Member:
        member = self._spawn("consume", extra_env=extra_env)
        self.consumers.append(member)
        return member

    def start_other(
        self,
        label: str,
        *,
        settings: Settings | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Member:
        member = self._spawn("consume", settings=settings, extra_env=extra_env, label=label)
        self.others.append(member)
        return member

    def start_replayer(self, settings: Settings) -> Member:
        """A member of a fresh group: kept alive like the main group's members, since the
        run is only quiet once its group, too, has committed to the end."""
        member = self._spawn("consume", settings=settings, label="replay")
        self.replayers.append(member)
        return member

    def _forget(self, member: Member) -> None:
        for group in (self.relays, self.consumers, self.others, self.replayers):
            if member in group:
                group.remove(member)

    async def kill(self, member: Member) -> None:
        self._forget(member)
        await member.kill()

    async def stop(self, member: Member) -> None:
        self._forget(member)
        if not member.alive() and not member.stopped_by_us:
            self._exited_by_itself(member)  # it died before we got round to stopping it
            return
        code = await member.terminate()
        # -SIGTERM: the signal came before the handler was installed (still importing);
        # nothing had started, so dying of it is what any process does.
        if code is None:
            self.anomalies.append(f"{member.name} did not exit within {TERM_TIMEOUT_S}s of SIGTERM")
        elif code not in (0, -signal.SIGTERM):
            self.anomalies.append(f"{member.name} exited {code} on SIGTERM:\n{member.tail()}")

    def reap(self) -> None:
        """Forget members that died without being told to; a supervisor restarts them.

        Exit status 2 is the CLI's orderly "tokendist: <error>" exit, seen when a member
        starts while a service is down: counted, not an anomaly (a supervisor restarts
        it, and so does ``restore``). Anything else (a traceback, a signal) is one."""
        for group in (self.relays, self.consumers, self.others, self.replayers):
            for member in [m for m in group if not m.alive() and not m.stopped_by_us]:
                group.remove(member)
                self._exited_by_itself(member)
                if group is self.replayers:
                    self.start_replayer(member.settings)

    def _exited_by_itself(self, member: Member) -> None:
        member.close()
        code = member.proc.returncode
        if code == CLI_ERROR_EXIT:
            self.error_exits.append(f"{member.name}: {member.tail(1)[-200:]}")
        else:
            self.anomalies.append(f"{member.name} exited by itself with {code}:\n{member.tail()}")

    def restore(self, relays: int, consumers: int) -> None:
        self.reap()
        while len(self.relays) < relays:
            self.start_relay()
        while len(self.consumers) < consumers:
            self.start_consumer()

    async def shutdown(self) -> None:
        members = [*self.relays, *self.consumers, *self.others, *self.replayers]
        await asyncio.gather(*(self.stop(m) for m in members))
