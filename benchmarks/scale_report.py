"""Render the tables of ``bench_scale.py``'s JSON as Markdown (the measured part of reports/benchmarks/scale.md).

    python benchmarks/scale_report.py reports/benchmarks/scale.json
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

COLUMNS = [("n", "N"), ("plan_s", "plan s"), ("plan_job_s", "job start-up, planning s"),
           ("startup_s", "job start-up, slice s"), ("slices_s", "slices s"), ("dag_s", "DAG s"),
           ("merge_s", "merge s"), ("manifest_mib", "table MiB"), ("listing_s", "listing s"),
           ("files_tracked", "files DVC tracks"),
           ("commit_s", "dvc commit s"), ("noop_status_s", "no-op status s"), ("noop_repro_s", "no-op repro s"),
           ("peak_mib", "plan peak MiB")]


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(result: dict) -> str:
    lines = [f"Device: {result['device']}; {result['date']}; `{result['command']}`; {result['shards']} shards.", ""]
    for dataset in ("ssv2", "deepcad"):
        rows = result.get(dataset) or []
        if not rows:
            continue
        lines += [f"### {dataset}", "", "| " + " | ".join(h for _, h in COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
        exps = result.get("exponents", {}).get(dataset, {})
        lines.append("| growth exponent, all sizes | "
                     + " | ".join(fmt(exps.get(k)) if k in exps else "" for k, _ in COLUMNS[1:]) + " |")
        if len(rows) >= 2:  # the slope between the two largest sizes: where constants no longer hide the growth
            a, b = rows[-2], rows[-1]
            lines.append("| growth exponent, last two | " + " | ".join(
                fmt(round(math.log(b[k] / a[k]) / math.log(b["n"] / a["n"]), 2))
                if isinstance(a.get(k), (int, float)) and a.get(k) and b.get(k) and k != "n" else ""
                for k, _ in COLUMNS[1:]) + " |")
        work = [r for r in rows if "work_per_item_s" in r]
        for r in work:
            lines += ["", f"Per-item work at N = {r['n']:,}: one real shard job of {r['work_items']} items took "
                          f"{r['work_job_s']} s, {r['work_per_item_s']} s per item after its start-up."]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
