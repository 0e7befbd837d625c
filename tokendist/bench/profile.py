"""``--profile``: py-spy attached to each consumer of the burst runs, and a summary of
where its wall time went.

py-spy samples from outside the process (no instrumentation inside the consumer, so its
timing barely changes) and records idle samples too (``--idle``): an asyncio consumer
that waits on the network shows up as the event loop sitting in ``select``, which is
exactly what a profile of a waiting pipeline must show.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLES_PER_S = 100
# The event loop with nothing to run waits in the selectors module (epoll) for a socket
# or a timer: a sample whose leaf is there is idle.
IDLE_LIBRARY = "selectors"
# Other threads (the default executor's, which aiohttp's resolver uses) wait for work
# nearly all the time; counted, they would drown the event loop's shares.
THREAD_ROOT = "Thread._bootstrap "
OUR_PACKAGES = ("tokendist",)
TOP = 8


class Recorder:
    """``py-spy record`` of one running process, until that process exits."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        self._log = output.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 -- a dev tool from our own venv
            [
                _py_spy(),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--output",
                str(output),
                "--rate",
                str(SAMPLES_PER_S),
                "--idle",
                "--nonblocking",  # never pause the consumer to read its stacks
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def finish(self, timeout_s: float) -> str:
        """The folded stacks, once the profiled process has exited and py-spy wrote them."""
        try:
            await asyncio.to_thread(self.proc.wait, timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        return self.output.read_text(encoding="utf-8") if self.output.exists() else ""


def _py_spy() -> str:
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}")
    if found is None:
        raise RuntimeError("--profile needs py-spy: pip install -e '.[dev]'")
    return found


def summarize(folded: str) -> list[tuple[str, float]]:
    """Shares of the event-loop thread's samples, in percent: idle in ``select``; busy
    time by the library running at the sample (the stack's leaf); busy time under each
    of our functions (the innermost frame of our own packages), the top ``TOP`` of each."""
    idle = 0
    by_library: collections.Counter[str] = collections.Counter()
    under_ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith(THREAD_ROOT):
            continue
        total += count
        if _library(frames[-1]) == IDLE_LIBRARY:
            idle += count
            continue
        by_library[_library(frames[-1])] += count
        ours = next((f for f in reversed(frames) if _library(f) in OUR_PACKAGES), None)
        under_ours["(outside our code)" if ours is None else _without_line(ours)] += count
    if total == 0:
        return []
    pct = 100 / total
    return [
        ("idle: event loop waiting in select", idle * pct),
        *((f"busy in {lib}", n * pct) for lib, n in by_library.most_common(TOP)),
        *((f"busy under {fn}", n * pct) for fn, n in under_ours.most_common(TOP)),
    ]


def _without_line(frame: str) -> str:
    """``Chain.sign (tokendist/consumer/chain.py:171)`` →
    ``Chain.sign (tokendist/consumer/chain.py)``: one function, whichever of its lines ran."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.split(':', 1)[0].rstrip(')')})"


def _library(frame: str) -> str:
    """``Chain.sign (tokendist/consumer/chain.py:171)`` → ``tokendist``;
    ``select (selectors.py:468)`` → ``selectors``."""
    _, _, where = frame.rpartition(" (")
    path = where.split(":", 1)[0]
    return path.split("/", 1)[0].removesuffix(".py")
