"""Stage validate_audio: measure the audio folder train_audio_vae reads, check thresholds, write a report with plots.

    python -m stages.validate_audio [--params params.yaml]

Scans <audio.root> with section audio (lib.audio.folder.scan_audio_folder, the trainer's own scan: bad files
are quarantined with a reason) and checks it against section validate_audio (report_dir, thresholds).

Writes into <validate_audio.report_dir>:
    report.md       what was measured, tables, plots, thresholds (marked FAILED at the top on failure)
    metrics.json    numbers for `dvc metrics show` / `dvc exp show`, thresholds_failed among them
    durations.png, quarantine.png

Exits 1 after writing all of the above when a threshold fails, naming each params key and the shortfall;
train_audio_vae refuses to start until it passes.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.audio.folder import AudioFolderConfig, scan_audio_folder
from lib.audio.validate import ValidateAudioConfig, check_thresholds, compute_metrics, dvc_metrics
from lib.audio.validate_report import render_report, write_plots
from lib.cli import StageCheckFailed, run_stage, stage_parser
from lib.config import load_section
from lib.io import atomic_write_json, atomic_write_text

log = logging.getLogger("validate_audio")


def main() -> None:
    args = stage_parser("validate_audio", __doc__).parse_args()
    cfg = load_section(args.params, "validate_audio", ValidateAudioConfig)
    folder = load_section(args.params, "audio", AudioFolderConfig)

    scan = scan_audio_folder(folder)
    metrics = compute_metrics(scan, folder)
    failures = check_thresholds(metrics, cfg)

    out = Path(cfg.report_dir)
    plots = write_plots(scan.files, metrics, out)
    atomic_write_json(out / "metrics.json", dvc_metrics(metrics, failures))
    atomic_write_text(out / "report.md", render_report(metrics, failures, plots, cfg))
    log.info("%s: %d good files (%.1f s), %d quarantined; report in %s", folder.root, metrics["totals"]["files"],
             metrics["totals"]["seconds"], metrics["totals"]["quarantined"], out / "report.md")
    if failures:
        raise StageCheckFailed(f"validate_audio: {len(failures)} threshold check(s) failed "
                               f"(see {out / 'report.md'}):\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    run_stage(main)
