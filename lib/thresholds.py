"""Validation thresholds: one result per params key, and the report's markdown table of them.

A validation stage measures its dataset, compares each figure with a ``params.yaml`` limit, fails when any
limit is broken (``lib.gates`` then stops the trainers), and shows every comparison in its report.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ThresholdResult:
    """One threshold: its params key, limit, what was measured, and a message per failure."""

    key: str
    limit: float | int
    measured: str
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when nothing failed."""
        return not self.failures


def thresholds_md(results: Iterable[ThresholdResult]) -> list[str]:
    """Return the report's "Thresholds" section: one table row per result, failures in bold."""
    from lib.report import md_cell

    lines = ["## Thresholds", "", "| params key | value | measured | result |", "| --- | ---: | --- | --- |"]
    lines += [f"| `{r.key}` | {r.limit} | {md_cell(r.measured)} | {'pass' if r.passed else '**FAIL**'} |"
              for r in results]
    return [*lines, ""]


__all__ = ["ThresholdResult", "thresholds_md"]
