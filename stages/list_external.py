"""Stage list_external: a listing of every external input a params path names (weights, tokenizers, base models).

    python -m stages.list_external [--params params.yaml]

Paths such as ``train_cad_vlm.base_model`` or ``eval_apt.lpips_weights`` name content outside the pipeline, and
may be null, so they cannot be DVC dependencies themselves; a folder rewritten at the same path would leave the
stage that read it "up to date". DVC runs this stage on every ``dvc repro`` (``always_changed``): for each key in
:data:`EXTERNAL` it writes ``<out>/<key>.tsv`` (path, then path/size/mtime of each file: lib.listing), rewritten
only when it changed, and each consumer depends on its keys' files, so it reruns when the content at the path
changes, not only when the path does.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import run_stage, stage_parser
from lib.config import read_params
from lib.listing import write_path_listing
from lib.summary import dig

log = logging.getLogger("list_external")

OUT = Path("data/interim/listings/external")
# params keys naming external content, as dotted paths; a missing key counts as null (e.g. init_from)
EXTERNAL = (
    "build_cad_conversations.tokenizer",
    "train_apt.init_from",
    "eval_apt.lpips_weights",
    "eval_apt.dists_weights",
    "eval_apt.vgg16_weights",
    "train_video_vae.init_from",
    "train_video_vae.loss.perceptual_weights",
    "train_curriculum.init_from",
    "train_curriculum.loss.perceptual_weights",
    "train_audio_vae.init_from",
    "train_cad_vlm.init_from",
    "train_cad_vlm.base_model",
)


def main() -> None:
    parser = stage_parser("list_external", __doc__)
    args = parser.parse_args()
    params = read_params(args.params)
    changed = [key for key in EXTERNAL if write_path_listing(dig(params, key), OUT / f"{key}.tsv")]
    log.info("%d external input(s) listed under %s; changed: %s", len(EXTERNAL), OUT, ", ".join(changed) or "none")


if __name__ == "__main__":
    run_stage(main)
