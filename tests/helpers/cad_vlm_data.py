"""Tiny DeepCAD conversations for the CAD VLM tests, made in-process by the pipeline's own code.

synth_deepcad's generator -> render_deepcad's shard renderer (64 px, one shard) -> build_cad_conversations'
builder: the same files the stages write (``render/images/...``, ``conversations/{train,val}.json``), in a
second or two.
"""
from __future__ import annotations

import json
from pathlib import Path


def write_cad_conversations(root: Path, count: int = 12, image_size: int = 64,
                            views: tuple[str, ...] = ("front", "top", "right"), seed: int = 0,
                            train_fraction: float = 0.75, answer_format: str = "cadcode") -> dict[str, Path]:
    """Write ``count`` synthetic models' renders and conversations under ``root``.

    Returns ``{"raw", "render", "images", "conversations"}`` paths (``render`` is render_deepcad.out,
    ``conversations`` is build_cad_conversations.out, ``images`` the root the conversations' image paths are
    relative to: render_deepcad.out too, the paths running through its shard archives).
    """
    from lib.deepcad.conversations import OUTPUT_FILES, CADConversationsConfig, build_conversations
    from lib.deepcad.render_models import RenderDeepCADConfig, merge_shards, read_models, run_shard
    from lib.deepcad.synth import SynthDeepCADConfig, write_dataset

    root = Path(root)
    synth = SynthDeepCADConfig(out=str(root / "raw"), count=count, seed=seed,
                               split_fractions={"train": train_fraction, "validation": 1 - train_fraction, "test": 0.0})
    write_dataset(synth, progress=False)
    render = RenderDeepCADConfig(out=str(root / "render"), shards=1, image_size=image_size, views=list(views),
                                 save_meshes=False)
    run_shard(synth.out, render, 0, progress=False)
    merge_shards(synth.out, render)
    conv_cfg = CADConversationsConfig(out=str(root / "conversations"), answer_format=answer_format)
    result = build_conversations(read_models(render.out), render.views, Path(render.out), conv_cfg)
    out = Path(conv_cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in result.by_split.items():
        (out / OUTPUT_FILES[split]).write_text(json.dumps(rows))
    return {"raw": root / "raw", "render": root / "render", "images": root / "render",
            "conversations": out}
