"""Stage synth_deepcad: write the embedded DeepCAD-format dataset under synth_deepcad.out.

Layout as in the real download: cad_json/<4-digit folder>/<8-digit id>.json (Sketch + ExtrudeFeature
entities, properties.bounding_box, sequence) and train_val_test_split.json. Varied parts (plates with
holes, brackets, flanges, stepped shafts, channels, bosses, slots, pockets, intersections) on several
sketch planes, with every extent type and boolean. Same seed -> same bytes.
Params (section synth_deepcad): count, seed, split_fractions, families. `count: 1100` with
split_fractions {train: 0.9090909, validation: 0.0909091, test: 0} gives the "DeepCAD 1K" scale
(1,100 models -> 3,300 images -> 3,000 / 300 conversations).
"""
from __future__ import annotations

import logging

from lib.cli import run_stage, stage_parser
from lib.config import load_section
from lib.deepcad.synth import SynthDeepCADConfig, write_dataset

log = logging.getLogger("synth_deepcad")


def main() -> None:
    args = stage_parser("synth_deepcad", __doc__).parse_args()
    cfg = load_section(args.params, "synth_deepcad", SynthDeepCADConfig)
    log.info("writing %d DeepCAD models to %s", cfg.count, cfg.out)
    write_dataset(cfg, progress=not args.no_progress)


if __name__ == "__main__":
    run_stage(main)
