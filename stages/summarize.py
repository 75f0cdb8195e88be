r"""Stage summarize: the headline numbers of the run in one small file, for `dvc exp show` and `dvc metrics diff`.

    python -m stages.summarize [--params params.yaml]

Reads the metrics.json of validate_ssv2, validate_deepcad, validate_audio, bench_loader, eval_apt, eval_vae and
eval_cad_vlm (each stage's report_dir in the params file) and writes <summarize.out> (reports/summary.json): about
20 stable names, each trained model beside its trivial baseline, data counts, quarantine rates, loader efficiency
(lib/summary.py lists them). A stage that has not run gives null. Also writes <summarize.page>
(reports/index.html): those numbers beside their baselines, every report folder's images and Markdown reports.
Compare experiments on exactly these columns:

    dvc exp show --drop '.*' --keep '^(Experiment|Created|summary\..*)$'
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params
from lib.io import atomic_write_json, atomic_write_text
from lib.report_page import render_page
from lib.summary import SummarizeConfig, metrics_files, summarize

log = logging.getLogger("summarize")


def main() -> None:
    args = stage_parser("summarize", __doc__).parse_args()
    cfg = load_section(args.params, "summarize", SummarizeConfig)
    files = metrics_files(read_params(args.params))
    summary = summarize(files, cfg.digits)
    missing = [stage for stage, path in files.items() if not path.is_file()]
    if missing:
        log.warning("no metrics yet from %s (their names are null)", ", ".join(missing))
    atomic_write_json(cfg.out, summary)
    page = Path(cfg.page)
    atomic_write_text(page, render_page(Path(cfg.reports), summary["summary"], page))
    log.info("wrote %s and %s", cfg.out, page)


if __name__ == "__main__":
    run_stage(main)
