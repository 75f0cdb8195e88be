"""Stage build_cad_conversations: image -> CAD code conversations in TinyLLaVA / LLaVA format.

One conversation per rendered (model, view) of each split in build_cad_conversations.splits: the
human turn is "<image>\\n" + a prompt from build_cad_conversations.prompts, the answer is the model's
code in answer_format: `cadcode` (this project's CAD code) or `openecad` (OpenECAD's Python API code, to
fine-tune an OpenECAD checkpoint through train_cad_vlm.base_model). Image paths are relative to the render
stage's image folder. Answers longer than max_answer_chars are dropped or truncated (on_too_long); answers of
more than max_answer_tokens tokens (by the tokenizer folder given) and models with no form in the format are
dropped; each is counted in summary.json.

Writes <out>/train.json, val.json (and test.json if asked), summary.json, quarantine.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import run_stage, stage_parser
from lib.config import load_section
from lib.deepcad.conversations import OUTPUT_FILES, CADConversationsConfig, build_conversations, length_stats
from lib.deepcad.render_models import RenderDeepCADConfig, read_models
from lib.io import atomic_write_json

log = logging.getLogger("build_cad_conversations")


def main() -> None:
    args = stage_parser("build_cad_conversations", __doc__).parse_args()
    cfg = load_section(args.params, "build_cad_conversations", CADConversationsConfig)
    render = load_section(args.params, "render_deepcad", RenderDeepCADConfig)
    models = read_models(render.out)
    image_dir = Path(render.out)  # image paths run through the shard archives (read_models)
    result = build_conversations(models, render.views, image_dir, cfg)
    out = Path(cfg.out)
    for split, rows in result.by_split.items():
        atomic_write_json(out / OUTPUT_FILES[split], rows, indent=None)
    summary = {
        "image_dir": str(image_dir),
        "conversations": {s: len(v) for s, v in result.by_split.items()},
        "answer_format": cfg.answer_format,
        "truncated": result.truncated,
        "dropped": result.dropped,
        "dropped_over_tokens": result.dropped_tokens,
        "unrepresentable": result.unrepresentable,
        "quarantined": len(result.quarantine),
        "lengths": {s: length_stats(v) for s, v in result.by_split.items()},
        "prompts": list(cfg.prompts),
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "quarantine.json", [q.to_dict() for q in result.quarantine])
    log.info("conversations %s (%s); truncated %d, dropped %d (chars) + %d (tokens) + %d (unrepresentable), "
             "quarantined %d", summary["conversations"], cfg.answer_format, result.truncated, result.dropped,
             result.dropped_tokens, result.unrepresentable, len(result.quarantine))


if __name__ == "__main__":
    run_stage(main)
