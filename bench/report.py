"""Statistics over repeated runs, and the results table (terminal and ``RESULTS.md``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Spread", "Target", "percentile", "spread"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of unsorted ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Spread:
    """One figure over several runs: the median of the per-run values, and their range."""

    median: float
    low: float
    high: float
    runs: int

    def text(self, fmt: str = "{:.2f}") -> str:
        if self.runs == 0 or math.isnan(self.median):
            return "n/a"
        if self.runs == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}–{fmt.format(self.high)})"


def spread(values: Sequence[float]) -> Spread:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    return Spread(statistics.median(values), min(values), max(values), len(values))


@dataclass
class Target:
    name: str
    limit: str
    measured: str
    passed: bool | None
    """None: not measured in this run."""

    @property
    def verdict(self) -> str:
        return "—" if self.passed is None else ("PASS" if self.passed else "MISS")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        level = "##" if self.title.startswith("Targets") else "###"
        lines = [f"{level} {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def plain(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.header)]
        out = [self.title, "  ".join(h.ljust(w) for h, w in zip(self.header, widths, strict=True))]
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def fmt_ms(s: Spread) -> str:
    return s.text("{:.2f}")


def per_run(results: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in results if key in r]
