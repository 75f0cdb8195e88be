"""Stage train_cad_vlm: train the image -> CAD code model on the DeepCAD conversations.

    python -m stages.train_cad_vlm [--params params.yaml] [--no-progress]

Default: the compact CNN + GRU model (lib.models.cad_vlm.CADVLM, ~0.64M parameters) from scratch on
<build_cad_conversations.out>/{train,val}.json, images from the shard archives of <render_deepcad.out> resized to
`image_size` and held in memory, answers tokenised by lib.cad.tokenizer.CADTokenizer (answers that do not
parse or are longer than `max_len` ids are skipped and counted). Teacher-forced cross-entropy in the shared
loop lib.train.Trainer; validation loss on all validation conversations every `val_every` epochs; early
stopping on it (`early_stopping: {patience, min_delta}`, null disables).

With `base_model: <folder>` a local Hugging Face vision-language checkpoint (LLaVA-style, e.g. TinyLLaVA
converted to transformers) is fine-tuned instead, full or `training_mode: lora` (no lora_targets: the
language model's attention projections). A missing folder exits 1 saying how to get one.

Params: section train_cad_vlm. Trainer knobs are flat (batch_size, lr, warmup_steps, checkpoint_every,
out_dir, ...: lib.train.TrainConfig); `epochs` sets the run length (`steps` only with epochs: null);
`model` is nested (lib.models.cad_vlm.CADVLMConfig). Try a variant with
    dvc exp run -S train_cad_vlm.epochs=30 -S train_cad_vlm.model.width=1.5 eval_cad_vlm

Resume: checkpoints and history.jsonl are `persist: true` in dvc.yaml; a killed run restarted continues
from its latest complete checkpoint (same params, data and code) and ends with the same weights.

Writes under <out_dir>: checkpoints/step-NNNNNN, final/raw/<cad_vlm|vlm>.safetensors, final/metrics.json,
config.json, history.jsonl (every micro-batch's train loss, every validation loss); under <report_dir>:
convergence.md (per epoch: train loss, val loss, gap, per-batch loss variance, improvement),
convergence.png, convergence.json (the last epoch's values), convergence_epochs.json (one row per epoch);
under <tracker_dir>: DVCLive metrics.json and plots/metrics/*.tsv.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params, to_dict
from lib.deepcad.conversations import CADConversationsConfig
from lib.deepcad.render_models import RenderDeepCADConfig
from lib.deepcad.validate import ValidateDeepCADConfig
from lib.gates import require_validated
from lib.train.cad_vlm import (
    HF_MODEL_NAME,
    MODEL_NAME,
    convergence_rows,
    from_section,
    history_path,
    load_data,
    make_trainer,
    read_history,
    schedule_for,
    write_convergence,
)

log = logging.getLogger("train_cad_vlm")


def main() -> None:
    args = stage_parser("train_cad_vlm", __doc__).parse_args()
    cfg = from_section(read_params(args.params).get("train_cad_vlm"), f"{args.params}: train_cad_vlm")
    conversations = load_section(args.params, "build_cad_conversations", CADConversationsConfig).out
    require_validated(load_section(args.params, "validate_deepcad", ValidateDeepCADConfig).report_dir,
                      "validate_deepcad")
    image_root = Path(load_section(args.params, "render_deepcad", RenderDeepCADConfig).out)  # see read_models
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    log.info("train_cad_vlm: %s (trainer keys: see TrainConfig below)",
             {k: v for k, v in to_dict(cfg).items() if k != "train"})
    data = load_data(cfg, conversations, image_root)
    log.info("conversations used: train %d, validation %d (%s)", len(data.train), len(data.val), data.summary())
    trainer = make_trainer(cfg, data)
    spe = schedule_for(cfg, len(data.train)).steps_per_epoch
    log.info("%s: %d optimiser steps (%d per epoch)%s", cfg.base_model or "compact CADVLM", trainer.cfg.steps, spe,
             f"; resuming from {trainer.resumed_from}" if trainer.resumed_from is not None else "")
    trainer.run(progress=not args.no_progress)

    rows = convergence_rows(read_history(history_path(cfg)), spe)
    model_name = HF_MODEL_NAME if cfg.base_model else MODEL_NAME
    info = {"model": f"{cfg.base_model} ({model_name})" if cfg.base_model else
            f"compact CADVLM, {trainer.unwrap(MODEL_NAME).num_parameters():,} parameters, {cfg.image_size} px",
            "train": len(data.train), "val": len(data.val), "steps_per_epoch": spe,
            "batch_size": cfg.train.batch_size, "stop_reason": trainer.stop_reason, "step": trainer.state.step,
            "skipped": data.describe_skipped(cfg.max_len)}
    last = write_convergence(cfg.report_dir, rows, info)
    out = Path(cfg.train.out_dir)
    log.info("done at step %d (%s): %s", trainer.state.step, trainer.stop_reason,
             ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))
    log.info("weights in %s, convergence table in %s, DVCLive metrics in %s", out / "final",
             Path(cfg.report_dir) / "convergence.md", cfg.train.tracker_dir or out / "dvclive")


if __name__ == "__main__":
    run_stage(main)
