"""What one run knows while it runs: its rng, world, processes, workload and journal."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.faults.members import Fleet
from tests.faults.sandbox import World
from tests.faults.stack import Stack
from tests.faults.workload import Workload


@dataclass
class Ctx:
    rng: random.Random
    stack: Stack
    world: World
    fleet: Fleet
    workload: Workload
    relays: int  # how many relays / group members a healthy run has (restored at the end)
    consumers: int
    tokens_short: bool  # the Distributor was funded with less than the run pays out
    started: float = field(default_factory=time.monotonic)
    faults: Counter[str] = field(default_factory=Counter)
    metrics: Counter[str] = field(default_factory=Counter)
    journal: list[str] = field(default_factory=list)
    replay_groups: list[str] = field(default_factory=list)
    topped_up: bool = False

    def note(self, text: str) -> None:
        self.journal.append(f"{time.monotonic() - self.started:7.2f}s  {text}")
