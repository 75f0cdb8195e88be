"""`dvc repro validate_ssv2` from a fresh clone with tiny params: the DAG, outputs, metrics, no-op rerun."""
import json
import math
import os
import re
import shutil

import pandas as pd
import pytest
import yaml

from lib import archive
from tests.helpers.workspace import run, set_params

pytestmark = pytest.mark.pipeline


def test_dvc_repro_validate_ssv2_embed_text_and_bench_loader_end_to_end(clone):
    run(["dvc", "repro", "validate_ssv2", "embed_text", "bench_loader"], clone)  # one clone for the three

    raw = clone / "data/raw/ssv2_synth"
    assert len(list((raw / "20bn-something-something-v2").glob("*.webm"))) == 6
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    assert len(manifest) == 6 and set(manifest["split"]) == {"train", "validation"}

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout)
    metrics = shown[""]["data"]["reports/validate_ssv2/metrics.json"]["data"]  # what `dvc exp show` reads
    assert metrics["videos"] == 6 and metrics["quarantined"] == 0 and metrics["thresholds_failed"] == 0
    assert metrics["splits"] == {"train": 3, "validation": 3, "test": 0}
    # views per train video = steps * batch * accumulation / 3 train videos, from the clone's params
    apt = yaml.safe_load((clone / "params.yaml").read_text())["train_apt"]
    assert metrics["exposure"]["train_apt"] == pytest.approx(apt["steps"] * apt["batch_size"] * apt["grad_accum"] / 3)
    report = (clone / "reports/validate_ssv2/report.md").read_text()
    assert "risky" in report and (clone / "reports/validate_ssv2/class_balance.png").stat().st_size > 0

    # git ignores what DVC tracks: data never lands in git
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout.splitlines()
    data_in_git = [line for line in status if "data/" in line and not line.endswith(".gitignore")]
    assert data_in_git == []

    # the fan-out holds one archive per shard, not one file per video: what DVC tracks does not grow with videos
    ingest = yaml.safe_load((clone / "params.yaml").read_text())["ingest_ssv2"]
    archives = sorted((clone / "data/interim/ssv2/archives").iterdir())
    assert len(archives) == ingest["shards"] and not (clone / "data/interim/ssv2/videos").exists()

    # the two stages beside validation on the same ingest (one clone: synth and ingest run once)
    embed = shown[""]["data"]["reports/embed_text/metrics.json"]["data"]
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    texts = set(manifest["label"].dropna()) | set(manifest["template"].dropna())
    assert embed["count"] == len(texts) + 1 and embed["dim"] == 384  # + the one CAD prompt
    stable = json.loads((clone / "data/loader/stable.json").read_text())
    assert stable["batch_size"] == 2 and stable["num_workers"] in (0, 1)

    # adding nothing: the cache answers everything on a forced rerun
    run(["dvc", "repro", "-f", "-s", "embed_text"], clone)
    again = json.loads((clone / "reports/embed_text/metrics.json").read_text())
    assert again["hits"] == embed["count"] and again["misses"] == 0

    # nothing changed: only the root's listing is rewritten (always_changed), unchanged, so nothing else reruns
    again = run(["dvc", "repro", "validate_ssv2"], clone).stdout
    assert re.findall(r"Running stage '(\w+)'", again) == ["list_ssv2"], again
    assert "Stage 'ingest_ssv2' didn't change, skipping" in again

    # a raw video rewritten with the same bytes (a new mtime) changes the listing, so ingestion reruns
    video = sorted((raw / "20bn-something-something-v2").glob("*.webm"))[0]
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    out = run(["dvc", "repro", "ingest_ssv2"], clone).stdout
    assert "Running stage 'ingest_ssv2'" in out

    # a validate-only param reruns validation alone
    set_params(clone, {"validate_ssv2": {"min_videos": 4}})
    out = run(["dvc", "repro", "validate_ssv2"], clone).stdout
    assert "Running stage 'validate_ssv2'" in out and "Running stage 'ingest_ssv2'" not in out


def test_failed_threshold_fails_the_stage_with_its_key(clone):
    set_params(clone, {"validate_ssv2": {"min_videos_per_class": 50}})
    proc = run(["dvc", "repro", "validate_ssv2"], clone, check=False)
    assert proc.returncode != 0
    assert "validate_ssv2.min_videos_per_class" in proc.stdout + proc.stderr


def test_dvc_repro_eval_apt_then_an_experiment_shows_beside_it(clone):
    out = run(["dvc", "repro", "eval_apt"], clone).stdout
    assert "Running stage 'train_apt'" in out and "Running stage 'eval_apt'" in out
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout)[""]["data"]
    ev = shown["reports/eval_apt/metrics.json"]["data"]
    assert ev["clips"] == 2 and {"bicubic", "G", "G_ema"} <= set(ev)
    live = shown["reports/train_apt/dvclive/metrics.json"]["data"]
    assert live["step"] == 4 and "loss" in live["g"]  # DVCLive nests "g/loss" as g: {loss}
    assert (clone / "data/models/train_apt/final/ema/G.safetensors").is_file()
    again = run(["dvc", "repro", "eval_apt"], clone).stdout  # nothing changed: nothing reruns
    assert sorted(re.findall(r"Running stage '(\w+)'", again)) == ["list_external", "list_ssv2"], again  # always run

    # an experiment with another learning rate, the other loss kind (RpGAN + approximate R1/R2) and the other
    # degradation kind (Real-ESRGAN + codec): a fresh run (other fingerprint), listed beside the workspace
    run(["dvc", "exp", "run", "-n", "seedvr2", "-S", "train_apt.lr=0.001", "-S", "train_apt.loss.kind=rpgan_r1r2",
         "-S", "train_apt.loss.r2=1.0", "-S", "train_apt.degrade.kind=realesrgan_video", "eval_apt"], clone)
    rows = json.loads(run(["dvc", "exp", "show", "--json"], clone).stdout)
    exps = [r for row in rows for e in (row.get("experiments") or []) for r in e.get("revs", [])]
    assert "seedvr2" in {r["name"] for r in exps}, exps
    seedvr2 = next(r for r in exps if r["name"] == "seedvr2")
    apt_params = seedvr2["data"]["params"]["params.yaml"]["data"]["train_apt"]
    assert apt_params["lr"] == 0.001
    assert apt_params["loss"]["kind"] == "rpgan_r1r2" and apt_params["degrade"]["kind"] == "realesrgan_video"
    seedvr2_metrics = seedvr2["data"]["metrics"]["reports/eval_apt/metrics.json"]["data"]
    assert math.isfinite(seedvr2_metrics["G"]["psnr"]) and seedvr2_metrics["G"]["psnr"] != ev["G"]["psnr"]

    # a re-ingest with another short side changes the manifest's rows at the same path: train_apt starts a fresh
    # run (it used to resume the old data's weights) and sets the last run's checkpoint aside instead of deleting it
    # (48 makes the 96x64 sources 72x48, a VP9 width decord 0.6 cannot copy out: the loaders fall back to pyav)
    # (`-s` stage by stage: the stages between them, bench_loader and embed_text, would rerun too and cost 20 s)
    set_params(clone, {"ingest_ssv2": {"short_side": 48}})
    assert "Running stage 'ingest_ssv2'" in run(["dvc", "repro", "-s", "ingest_ssv2"], clone).stdout
    proc = run(["dvc", "repro", "-s", "train_apt"], clone)
    assert "Running stage 'train_apt'" in proc.stdout
    assert set(pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")["height"]) == {48}
    assert "starting another run" in proc.stderr and "resumed from" not in proc.stderr
    assert list((clone / "data/models/train_apt/checkpoints").glob("superseded-*/step-000004/trainer_state.json"))


def test_dvc_repro_eval_vae_trains_both_video_vaes_and_the_audio_vae(clone):
    out = run(["dvc", "repro", "eval_vae"], clone).stdout
    for stage in ("synth_speech", "train_video_vae", "train_curriculum", "train_audio_vae", "eval_vae"):
        assert f"Running stage '{stage}'" in out, stage
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout)[""]["data"]
    assert shown["reports/eval_vae/metrics.json"]["data"]["video"]["clips"] == 2  # what `dvc exp show` reads
    metrics = json.loads((clone / "reports/eval_vae/metrics.json").read_text())
    video, audio = metrics["video"], metrics["audio"]
    assert set(video["points"]) == {"16px_4f", "32px_4f"}  # the tiny curriculum's two phases
    for run_name in ("train_video_vae", "train_curriculum"):
        for point in video["points"]:
            row = video[run_name][point]
            assert row["vae"]["psnr"] > 0 and "bicubic_values" in row
    assert {"vae", "baseline", "mel_inversion"} <= set(audio) and audio["clips"] == 2
    curriculum = json.loads((clone / "data/models/train_curriculum/final/curriculum.json").read_text())
    assert [(p["name"], p["start"], p["end"]) for p in curriculum["history"]] == [("low", 0, 2), ("high", 2, 4)]
    wavs = list((clone / "data/raw/speech_synth/wavs").glob("*.wav"))
    assert len(wavs) == 6  # every labelled tiny video spoken


def test_dvc_repro_eval_cad_vlm_scores_the_model_and_both_baselines(clone):
    out = run(["dvc", "repro", "eval_cad_vlm"], clone).stdout
    assert "Running stage 'train_cad_vlm'" in out and "Running stage 'eval_cad_vlm'" in out
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout)[""]["data"]
    metrics = shown["reports/eval_cad_vlm/metrics.json"]["data"]
    assert {"model", "nn_retrieval", "most_frequent"} <= set(metrics)
    assert metrics["model"]["parse_rate"] == 1.0  # constrained decoding only writes valid code
    assert (clone / "reports/eval_cad_vlm/grid.png").stat().st_size > 0

    # what validate_deepcad (upstream of train_cad_vlm) made, in the same clone
    splits = json.loads((clone / "data/raw/deepcad_synth/train_val_test_split.json").read_text())
    n = {s: len(v) for s, v in splits.items()}
    assert sum(n.values()) == 10
    train = json.loads((clone / "data/processed/deepcad_conversations/train.json").read_text())
    val = json.loads((clone / "data/processed/deepcad_conversations/val.json").read_text())
    assert (len(train), len(val)) == (3 * n["train"], 3 * n["validation"])  # one per (model, view)
    assert train[0]["conversations"][0]["value"].startswith("<image>\n")
    render = clone / "data/processed/deepcad_render"  # conversation images: through the shard archives
    assert all(archive.exists(render / c["image"]) for c in train + val)
    assert {c["image"].split("/")[0] for c in train + val} == {"archives"}

    metrics = shown["reports/validate_deepcad/metrics.json"]["data"]
    assert metrics["models"] == 10 and metrics["images"] == 30 and metrics["conversations"] == len(train) + len(val)

    # an external input rewritten at the same path reruns the stage that reads it: train_cad_vlm initialised from
    # a weights file, then the file's bytes change while params.yaml does not
    weights = clone / "init" / "cad_vlm.safetensors"
    weights.parent.mkdir()
    shutil.copy(clone / "data/models/train_cad_vlm/final/raw/cad_vlm.safetensors", weights)
    set_params(clone, {"train_cad_vlm": {"init_from": "init/cad_vlm.safetensors"}})
    assert "Running stage 'train_cad_vlm'" in run(["dvc", "repro", "train_cad_vlm"], clone).stdout
    assert "didn't change" in run(["dvc", "repro", "train_cad_vlm"], clone).stdout  # same bytes: nothing reruns
    shutil.copy(clone / "data/models/train_cad_vlm/final/raw/cad_vlm.safetensors", weights)  # the new weights
    out = run(["dvc", "repro", "train_cad_vlm"], clone).stdout
    assert "Running stage 'train_cad_vlm'" in out and "Running stage 'build_cad_conversations'" not in out
    assert (clone / "reports/train_cad_vlm/convergence.md").is_file()

    # a render param change reruns rendering and everything after it, not the generator
    set_params(clone, {"render_deepcad": {"image_size": 48}})
    out = run(["dvc", "repro", "validate_deepcad"], clone).stdout
    assert "Running stage 'render_deepcad'" in out and "Running stage 'synth_deepcad'" not in out
    from PIL import Image
    train = json.loads((clone / "data/processed/deepcad_conversations/train.json").read_text())  # new archives
    with archive.open_binary(render / train[0]["image"]) as fh, Image.open(fh) as im:
        assert im.size == (48, 48)
