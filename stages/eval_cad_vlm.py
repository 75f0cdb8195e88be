"""Stage eval_cad_vlm: CAD code from validation images by the trained model vs two baselines.

    python -m stages.eval_cad_vlm [--params params.yaml] [--no-progress]

Reads <train_cad_vlm.out_dir>/final/raw/cad_vlm.safetensors (or vlm.safetensors of a base_model run), the
conversations of build_cad_conversations.out and the images in the shard archives of <render_deepcad.out>/archives,
and sections train_cad_vlm (model, image_size, max_len, base_model) and eval_cad_vlm (report_dir, beam,
max_images, ...).
Every validation image whose reference code builds a solid is answered by:
    model            the trained model (grammar-constrained greedy decoding; beam search with beam > 1)
    nn_retrieval     the code of the nearest training image by raw pixels (grey, nn_pixels a side)
    nn_encoder       the code of the nearest training image by the trained encoder's pooled features
    most_frequent    the most frequent training code, for every image
    quantised_truth  the reference through the tokenizer (per-sketch frames): the ceiling, not a baseline
and scored (lib/eval/cad_vlm.py): parse rate, command / parameter accuracy, exact match, invalid rate,
volumetric IoU (invalid = 0) and Chamfer distance of the rebuilt solids, plus DeepCAD's definitions
(lib/eval/cad_metrics.py): acc_cmd, acc_param, median_cd / median_cd_8192 (x10^3), median_iou; with best_of > 1
also model_best_of (the best of N beam candidates by IoU).

Writes:
    <report_dir>/metrics.json   {n, model: {...}, nn_retrieval: {...}, nn_encoder: {...}, most_frequent: {...},
                                 quantised_truth: {...}, model_best_of: {...} when best_of > 1}
    <report_dir>/report.md      the table, what each candidate is, the grid
    <report_dir>/grid.png       input view | prediction rendered | ground truth rendered, a few images
    <report_dir>/items.json     every image's answers and scores per candidate
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params
from lib.deepcad.conversations import CADConversationsConfig
from lib.deepcad.render_models import RenderDeepCADConfig
from lib.eval.cad_vlm import EvalCADVLMConfig, comparison_grid, evaluate, render_report
from lib.io import atomic_write_json, atomic_write_text
from lib.render import save_png
from lib.train.cad_vlm import from_section

log = logging.getLogger("eval_cad_vlm")


def main() -> None:
    args = stage_parser("eval_cad_vlm", __doc__).parse_args()
    train = from_section(read_params(args.params).get("train_cad_vlm"), f"{args.params}: train_cad_vlm")
    cfg = load_section(args.params, "eval_cad_vlm", EvalCADVLMConfig)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    conversations = load_section(args.params, "build_cad_conversations", CADConversationsConfig).out
    image_root = Path(load_section(args.params, "render_deepcad", RenderDeepCADConfig).out)  # see read_models
    result = evaluate(cfg, train, conversations, image_root)

    out = Path(cfg.report_dir)
    save_png(out / "grid.png", comparison_grid(result.grid_items, cfg.render_size))
    atomic_write_json(out / "metrics.json", result.metrics)
    atomic_write_json(out / "items.json", result.items)
    atomic_write_text(out / "report.md", render_report(result.metrics, result.info, "grid.png"))
    m = result.metrics
    log.info("mean IoU: model %.3f | nn_retrieval %.3f | most_frequent %.3f (n=%d); report in %s",
             m["model"]["mean_iou"], m["nn_retrieval"]["mean_iou"], m["most_frequent"]["mean_iou"], m["n"],
             out / "report.md")


if __name__ == "__main__":
    run_stage(main)
