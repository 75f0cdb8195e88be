"""Stage validate_ssv2: measure the ingested SSv2 data, check thresholds, write a report with plots.

    python -m stages.validate_ssv2 [--params params.yaml]

Reads <ingest_ssv2.out>/manifest.parquet, quarantine.json and summary.json (what `ingest_ssv2`
wrote), section validate_ssv2 (report_dir, thresholds, exposure bands) and, for each trainer named
in validate_ssv2.exposure_trainers, only the keys steps, batch_size, grad_accum of that trainer's
section (an absent section is reported as "not configured").

Writes into <validate_ssv2.report_dir>:
    report.md          what was measured, tables, plots, thresholds (marked FAILED at the top on failure)
    metrics.json       numbers for `dvc metrics show` / `dvc exp show`
    class_counts.json  per class: our count beside the count expected from the real SSv2 frequency
    class_balance.png, durations.png, resolutions.png, quarantine.png

Exits 1 after writing all of the above when a threshold fails, naming each params key and the shortfall.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import StageCheckFailed, run_stage, stage_parser
from lib.config import load_section, read_params
from lib.io import atomic_write_json, atomic_write_text
from lib.ssv2.ingest import IngestSSv2Config
from lib.ssv2.validate import (
    ValidateSSv2Config,
    check_thresholds,
    compute_metrics,
    dvc_metrics,
    load_ingest_outputs,
    schedule_from_section,
)
from lib.ssv2.validate_report import render_report, write_plots

log = logging.getLogger("validate_ssv2")


def main() -> None:
    args = stage_parser("validate_ssv2", __doc__).parse_args()
    cfg = load_section(args.params, "validate_ssv2", ValidateSSv2Config)
    ingest = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    params = read_params(args.params)
    trainers = {name: schedule_from_section(params.get(name), f"{args.params}: {name}")
                for name in cfg.exposure_trainers}

    manifest, quarantine, summary = load_ingest_outputs(ingest.out)
    source = {"root": summary.get("root"), "ingest_out": ingest.out, "mode": summary.get("mode")}
    metrics = compute_metrics(manifest, quarantine, trainers, cfg, source=source)
    failures = check_thresholds(metrics, cfg)

    out = Path(cfg.report_dir)
    plots = write_plots(manifest, metrics, out)
    atomic_write_json(out / "class_counts.json", metrics["classes"]["per_class"])
    atomic_write_json(out / "metrics.json", dvc_metrics(metrics, failures))
    atomic_write_text(out / "report.md", render_report(metrics, failures, plots, cfg))
    log.info("%d videos, %d quarantined; report in %s", metrics["totals"]["videos"],
             metrics["totals"]["quarantined"], out / "report.md")
    if failures:
        raise StageCheckFailed(f"validate_ssv2: {len(failures)} threshold check(s) failed "
                               f"(see {out / 'report.md'}):\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    run_stage(main)
