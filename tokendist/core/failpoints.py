"""Failpoints: named places where a test may have the process die on purpose.

Configured by the ``failpoints`` setting (``TOKENDIST_FAILPOINTS=after:signed,...``).
Empty in production, where ``hit`` is one set lookup. A hit failpoint sends SIGKILL to
this very process: no cleanup, no flush, exactly like the OOM killer or a power cut.
"""

from __future__ import annotations

import os
import signal


class Failpoints:
    def __init__(self, spec: str = "") -> None:
        self.armed = frozenset(name.strip() for name in spec.split(",") if name.strip())

    def hit(self, name: str) -> None:
        if name in self.armed:
            os.kill(os.getpid(), signal.SIGKILL)
