"""Many runs, one line each, details for the failures, and the summary at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.run import Options, RunResult, run_once
from tests.faults.stack import Stack, StackError

Out = Callable[[str], None]


@dataclass
class Summary:
    stack: Stack
    opts: Options
    results: list[RunResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[RunResult]:
        return [r for r in self.results if not r.ok]

    def total(self, name: str) -> int:
        return sum(int(getattr(r.tally, name)) for r in self.results)

    def faults(self) -> Counter[str]:
        return sum((r.faults for r in self.results), Counter())

    def metrics(self) -> Counter[str]:
        return sum((r.metrics for r in self.results), Counter())

    def replay(self, seed: int) -> str:
        args = self.opts.replay_args(seed, self.stack.brokers)
        return f"{self.stack.shell_prefix()} .venv/bin/python -m tests.faults {args}"

    def render(self) -> str:
        n = len(self.results)
        rate = n / self.seconds * 3600 if self.seconds else 0.0
        errors = sum(1 for r in self.results if r.error is not None)
        lines = [
            "=" * 78,
            f"runs: {n} ({n - len(self.failures)} passed, {len(self.failures) - errors} failed, "
            f"{errors} harness errors) in {self.seconds:.0f}s = {rate:.0f} runs/hour, "
            f"{self.stack.brokers} broker(s)",
            f"faults by kind: {_counts(self.faults())}",
            f"payments confirmed: {self.total('confirmed')}, credited: {self.total('credited')}, "
            f"Distributed logs: {self.total('logs')}",
            f"lost: {self.total('lost')}, doubled: {self.total('doubled')}, "
            f"wrong amount/recipient: {self.total('wrong')}",
            f"verify passed: {sum(r.verify_ok for r in self.results)}/{n}",
            f"effects: {_counts(self.metrics())}",
        ]
        odd = [r for r in self.results if r.anomalies]
        if odd:
            lines.append(
                f"anomalies (members exiting unasked / not draining) in {len(odd)} runs: "
                + ", ".join(f"seed {r.seed}" for r in odd)
            )
        if self.failures:
            lines.append("FAILURES:")
            lines += [
                f"  seed {r.seed} ({r.verdict}): {self.replay(r.seed)}" for r in self.failures
            ]
        else:
            lines.append("failures: none")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "seconds": self.seconds,
                "brokers": self.stack.brokers,
                "runs": [
                    {
                        "seed": r.seed,
                        "verdict": r.verdict,
                        "seconds": round(r.seconds, 1),
                        "faults": dict(r.faults),
                        "metrics": dict(r.metrics),
                        "tally": {k: v for k, v in vars(r.tally).items() if k != "problems"},
                        "problems": r.tally.problems,
                        "outstanding": r.outstanding,
                        "anomalies": r.anomalies,
                        "error": r.error,
                    }
                    for r in self.results
                ],
            },
            indent=1,
        )


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def line(r: RunResult) -> str:
    t = r.tally
    return (
        f"seed {r.seed}: {r.verdict:5} {r.seconds:5.1f}s  confirmed {t.confirmed:3} credited "
        f"{t.credited:3} logs {t.logs:3} lost {t.lost} doubled {t.doubled}  verify "
        f"{'ok' if r.verify_ok else 'FAIL'}  faults: {_counts(r.faults)}"
    )


def details(r: RunResult, summary: Summary) -> str:
    parts = [f"--- seed {r.seed} {r.verdict}; replay with:", f"    {summary.replay(r.seed)}"]
    if r.error:
        parts.append("harness error:\n" + r.error)
    if r.outstanding:
        parts.append("not quiet after the timeout: " + "; ".join(r.outstanding))
    parts += [f"  problem: {p}" for p in r.tally.problems[:25]]
    if r.verify_report and not r.verify_ok:
        parts.append(r.verify_report)
    parts += [f"  anomaly: {a}" for a in r.anomalies]
    parts.append("journal:")
    parts += [f"  {j}" for j in r.journal]
    if not r.ok:
        parts.append(f"kept: database {r.database}, logs {r.log_dir}")
    elif r.anomalies:
        parts.append(f"kept: logs {r.log_dir}")
    return "\n".join(parts)


async def campaign(
    stack: Stack,
    seed: int,
    runs: int,
    opts: Options,
    *,
    out: Out,
    json_path: Path | None = None,
    reset_chain_every: int = 0,
) -> Summary:
    summary = Summary(stack, opts)
    began = time.monotonic()
    for r in range(runs):
        if reset_chain_every and r and r % reset_chain_every == 0:
            await stack.reset_chain()
            out(f"(chain reset to genesis before run {r})")
        try:
            if await stack.heal():
                out(f"(a service was down before run {r}: started it again)")
        except StackError as exc:
            out(f"(a service is down before run {r} and does not start: {exc})")
        result = await run_once(stack, seed + r, opts)
        summary.results.append(result)
        summary.seconds = time.monotonic() - began
        out(line(result))
        if not result.ok or result.anomalies:
            out(details(result, summary))
        if json_path is not None:
            await asyncio.to_thread(json_path.write_text, summary.to_json())
    out(summary.render())
    return summary
