"""`python -m stages.train_apt` then `python -m stages.eval_apt` on a tiny manifest: the stage CLIs end to end,
a rerun resumes instead of retraining, and eval compares G and EMA-G with the bicubic baseline."""
import json

import pandas as pd
import torch
import yaml

from lib.video.encode import EncodeSettings, write_video
from tests.helpers.ssv2_data import moving_frames
from tests.helpers.workspace import pass_validation, run_stage_module

H, W = 64, 96


def tiny_manifest(root):
    rows = []
    for k in range(8):
        path = f"videos/{k}.webm"
        write_video(root / path, moving_frames(20 + k, H, W, seed=k), fps=12,
                    settings=EncodeSettings(keyframe_interval=6))
        rows.append({"id": str(k), "split": "train" if k < 6 else "validation", "label": "l", "template": "t",
                     "class_index": k % 2, "path": path, "frames": 20 + k, "fps": 12.0, "width": W, "height": H})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    pass_validation(root.parent, "validate_ssv2")  # the trainers' gate, under the stage's working directory


def test_train_then_eval_stages(tmp_path):
    tiny_manifest(tmp_path / "interim")
    params = {
        "ingest_ssv2": {"out": "interim", "expected_height": H},
        "bench_loader": {"out": "loader"},
        "train_apt": {"steps": 4, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "checkpoint_every": 2,
                      "log_every": 1, "tracker": "dvclive", "tracker_dir": "reports/train_apt/dvclive",
                      "out_dir": "models/apt", "model": {"scale": 4, "channels": 8, "blocks": 1},
                      "disc_channels": 8, "degrade": {"scale": 4}, "crop": 32, "clip_frames": 4, "clip_stride": 1,
                      "val_clips": 2},
        "eval_apt": {"report_dir": "reports/eval_apt", "strip_clips": 2, "batch_size": 2},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".git").mkdir()  # dvclive looks for a repo root: keep it inside tmp_path

    train = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "models/apt/final/raw/G.safetensors").is_file()
    assert (tmp_path / "models/apt/final/ema/G.safetensors").is_file()
    live = json.loads((tmp_path / "reports/train_apt/dvclive/metrics.json").read_text())
    assert live["step"] == 4

    again = run_stage_module("train_apt", ["--no-progress"], tmp_path)  # a rerun resumes from step 4: no work
    assert again.returncode == 0 and "step-000004" in again.stderr

    # a re-ingest that changes the manifest's rows (same path): a fresh run, the old one set aside, not deleted
    manifest = pd.read_parquet(tmp_path / "interim/manifest.parquet")
    manifest.assign(frames=manifest["frames"] - 1).to_parquet(tmp_path / "interim/manifest.parquet")
    fresh = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "starting another run" in fresh.stderr and "resumed from" not in fresh.stderr
    aside = list((tmp_path / "models/apt/checkpoints").glob("superseded-*/step-000004"))
    assert len(aside) == 1 and (aside[0] / "trainer_state.json").is_file()

    ev = run_stage_module("eval_apt", [], tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports/eval_apt/metrics.json").read_text())
    assert {"bicubic", "G", "G_ema"} <= set(metrics)
    for name in ("G", "G_ema"):
        assert abs(metrics[name]["psnr"] - metrics["bicubic"]["psnr"] - metrics[name]["psnr_gain_db"]) < 1e-9
    assert (tmp_path / "reports/eval_apt/strip.png").stat().st_size > 0
    # border flicker on the 4-frame clips in chunks of 2 (the defaults): transition 1->2 is the one border
    assert metrics["flicker_frames"] == 4
    for name in ("bicubic", "G", "G_ema"):
        f = metrics[name]["flicker"]
        assert (f["chunk_frames"], f["overlap"], f["border_transitions"], f["inside_transitions"]) == (2, 0, 1, 2)
        assert f["ratio"] is None or abs(f["ratio"] - f["border"] / f["inside"]) < 1e-9
        assert "temporal_error" in metrics[name] and "lpips" not in metrics[name]
    # LPIPS / DISTS weights are null: said in metrics.json and the report, not silently skipped
    assert metrics["not_computed"]["lpips"].startswith("LPIPS not computed: eval_apt.lpips_weights is null")
    report = (tmp_path / "reports/eval_apt/report.md").read_text()
    assert "LPIPS not computed: eval_apt.lpips_weights is null; give the path to" in report
    assert "DISTS not computed: eval_apt.dists_weights is null" in report and "## Chunk-border flicker" in report

    # longer flicker clips, overlapping chunks: 6 frames, chunks of 3 keeping 2 -> borders at 1->2 and 3->4
    params["eval_apt"].update(flicker_clip_frames=6, flicker_chunk_frames=3, flicker_overlap=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ev = run_stage_module("eval_apt", [], tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports/eval_apt/metrics.json").read_text())
    assert metrics["flicker_frames"] == 6 and metrics["frames"] == 2 * 4  # PSNR etc. still on the 4-frame clips
    f = metrics["G"]["flicker"]
    assert (f["chunk_frames"], f["overlap"], f["border_transitions"], f["inside_transitions"]) == (3, 1, 2, 3)

    # a weights path that does not exist stops the stage, naming the key and the fix
    params["eval_apt"]["lpips_weights"] = "weights/lpips_vgg.pth"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = run_stage_module("eval_apt", [], tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "eval_apt.lpips_weights: weights/lpips_vgg.pth does not exist; set eval_apt.lpips_weights" in bad.stderr


def test_unknown_train_apt_key_names_it(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_apt": {"stepz": 3}}))
    proc = run_stage_module("train_apt", [], tmp_path)
    assert proc.returncode == 1 and "stepz" in proc.stderr and "did you mean" in proc.stderr


def test_training_waits_for_a_passed_validation(tmp_path):
    tiny_manifest(tmp_path / "interim")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params()))
    metrics = tmp_path / "reports/validate_ssv2/metrics.json"
    metrics.write_text(json.dumps({"videos": 8, "thresholds_failed": 2}))
    failed = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 1 and len(lines) == 1 and "Traceback" not in failed.stderr
    assert "2 validation threshold(s) failed" in lines[0] and "dvc repro validate_ssv2" in lines[0]
    assert not (tmp_path / "models/apt").exists()  # nothing trained
    metrics.unlink()
    missing = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    assert missing.returncode == 1 and "no validation result; run `dvc repro validate_ssv2`" in missing.stderr


def fake_embed_cache(cache_dir, texts, dim, seed=0):
    """Write an embed_text cache (namespace + texts.parquet) holding random unit vectors for ``texts``."""
    import numpy as np

    from lib.embed import _Namespace, namespace_dir, text_key

    identity = "f" * 64
    vectors = np.random.default_rng(seed).normal(size=(len(texts), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = [text_key(identity, t) for t in texts]
    ns = _Namespace.load(namespace_dir(cache_dir, identity))
    ns.append(keys, texts, vectors)
    pd.DataFrame({"text": texts, "kind": "label", "key": keys}).to_parquet(cache_dir / "texts.parquet")
    return dict(zip(texts, vectors, strict=False))


def base_params(**train_apt):
    section = {"steps": 4, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "checkpoint_every": 2,
               "log_every": 1, "tracker": "none", "out_dir": "models/apt",
               "model": {"scale": 4, "channels": 8, "blocks": 1}, "disc_channels": 8, "degrade": {"scale": 4},
               "crop": 32, "clip_frames": 4, "clip_stride": 1, "val_clips": 2}
    section.update(train_apt)
    return {"ingest_ssv2": {"out": "interim", "expected_height": H}, "bench_loader": {"out": "loader"},
            "embed_text": {"cache_dir": "cache"}, "train_apt": section,
            "eval_apt": {"report_dir": "reports/eval_apt", "strip_clips": 2, "batch_size": 2}}


def test_text_conditioned_generator_trains_on_cached_label_vectors(tmp_path):
    from safetensors.torch import load_file

    tiny_manifest(tmp_path / "interim")
    manifest = pd.read_parquet(tmp_path / "interim/manifest.parquet")
    manifest["label"] = [f"Pushing thing {k} from left to right" for k in range(len(manifest))]
    manifest.to_parquet(tmp_path / "interim/manifest.parquet")
    (tmp_path / "cache").mkdir()
    fake_embed_cache(tmp_path / "cache", list(manifest["label"]), dim=8)
    params = base_params(text_condition=True, model={"scale": 4, "channels": 8, "blocks": 1, "text_dim": 8})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    train = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "text conditioning: 6 train clips' label vectors" in train.stderr
    G = load_file(str(tmp_path / "models/apt/final/raw/G.safetensors"))
    assert G["blocks.0.film.weight"].shape == (16, 8)  # FiLM: 2 * channels from the 8-d text
    ev = run_stage_module("eval_apt", [], tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads((tmp_path / "reports/eval_apt/metrics.json").read_text())["clips"] == 2

    # a size mismatch between the cache and model.text_dim names the key and the size to set
    params["train_apt"]["model"]["text_dim"] = 6
    params["train_apt"]["out_dir"] = "models/other"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    assert bad.returncode == 1
    assert "train_apt.model.text_dim: 6" in bad.stderr and "set model.text_dim: 8" in bad.stderr


def test_full_then_lora_then_full_fine_tuning_through_the_stage(tmp_path):
    """APT's recipe: start G from a checkpoint (init_from), adapt it with LoRA, then fine-tune fully from the
    merged LoRA weights. Only LoRA-targeted layers change in the LoRA run; the merged export loads as plain G."""
    from safetensors.torch import load_file

    tiny_manifest(tmp_path / "interim")

    def train(out_dir, **section):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params(out_dir=out_dir, **section)))
        proc = run_stage_module("train_apt", ["--no-progress"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, load_file(str(tmp_path / out_dir / "final/raw/G.safetensors"))

    _, full = train("models/full")
    proc, lora = train("models/lora", init_from="models/full/final/raw", training_mode="lora",
                       lora_targets=["blocks.*.conv*"], lora_rank=4, lora_alpha=4, lr=0.01)
    assert "init_from: G <- models/full/final/raw/G.safetensors" in proc.stderr
    assert set(lora) == set(full)  # merged: plain keys, no lora_A/lora_B
    changed = {k for k in full if not torch.equal(full[k], lora[k])}
    assert changed and all(k.startswith("blocks.0.conv") and k.endswith("weight") for k in changed), changed
    proc, again = train("models/full2", init_from="models/lora/final/raw", steps=2, warmup_steps=0)
    assert "init_from: G <- models/lora/final/raw/G.safetensors" in proc.stderr
    assert any(not torch.equal(lora[k], again[k]) for k in ("head.weight", "tail.weight"))  # all layers train again
