"""Stage synth_ssv2: write the embedded SSv2-format dataset (videos + label files) under synth_ssv2.out.

The dataset uses SSv2's own layout (20bn-something-something-v2/<id>.webm, labels/*.json), so
ingest_ssv2 reads it exactly as it reads a real download. Same seed -> same label files and frames.
Params (section synth_ssv2): count, templates, class_balance, split_fractions, height, widths, fps,
min_seconds, max_seconds, crf, seed, workers. A killed run resumes: finished videos are kept.
"""
from __future__ import annotations

import logging

from lib.cli import run_stage, stage_parser
from lib.config import load_section
from lib.ssv2.synth import SynthSSv2Config, class_counts, write_dataset

log = logging.getLogger("synth_ssv2")


def main() -> None:
    args = stage_parser("synth_ssv2", __doc__).parse_args()
    cfg = load_section(args.params, "synth_ssv2", SynthSSv2Config)
    log.info("writing %d videos of %d classes to %s: %s", cfg.count, len(cfg.templates), cfg.out,
             class_counts(cfg))
    plan = write_dataset(cfg, progress=not args.no_progress)
    log.info("done: %d videos", len(plan))


if __name__ == "__main__":
    run_stage(main)
