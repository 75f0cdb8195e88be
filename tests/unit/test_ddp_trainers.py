"""The real trainers under 2-process DDP on CPU (gloo via torchrun, ``ACCELERATE_USE_CPU=1`` as ``accelerate
launch --cpu`` sets it): the data functions see the world (a bare PartialState made before the Trainer's
Accelerator used to pin "no distribution", so each rank trained alone), the VAE curriculum and the CAD VLM on 2
ranks equal one process accumulating the same micro-batches, and a run killed under 2 ranks resumes to the
uninterrupted weights.

APT is checked for resume, not against one process: on N ranks each step's G phase sees the D just updated,
while one process accumulating N micro-batches gives every G phase the D of before the step, so the two are
different algorithms, not the same one split differently (README, "Data parallel")."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers.ssv2_data import write_clip_manifest
from tests.helpers.training import final_weights

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

RUN = textwrap.dedent('''
    import json, sys
    from accelerate import PartialState
    trainer_name, out, manifest, accum, kill_at = sys.argv[1:6]
    accum, kill_at = int(accum), int(kill_at)
    if trainer_name == "vae":
        from lib.train.video_vae import from_section, make_trainer
        phases = [{"name": "A", "resolution": 8, "frames": 2, "batch_size": 2, "lr": 0.003, "steps": 3,
                   "warmup_steps": 1},
                  {"name": "B", "resolution": 16, "frames": 4, "batch_size": 2, "lr": 0.002, "steps": 3,
                   "warmup_steps": 1}]
        cfg = from_section({"grad_accum": accum, "checkpoint_every": 2, "log_every": 1, "tracker": "none",
                            "out_dir": out, "clip_stride": 1, "val_clips": 2, "val_every": 3,
                            "model": {"channels": 8, "latent_channels": 2, "temporal_compression": 2,
                                      "spatial_compression": 2, "blocks": 1}, "curriculum": {"phases": phases}},
                           "train_curriculum")
        trainer = make_trainer(cfg, manifest)
    elif trainer_name == "cad":
        from lib.train.cad_vlm import from_section, load_data, make_trainer
        conversations, images = manifest.split("|")
        cfg = from_section({"batch_size": 4, "grad_accum": accum, "lr": 0.003, "warmup_steps": 1, "epochs": 2,
                            "log_every": 1, "checkpoint_every": 3, "tracker": "none", "out_dir": out,
                            "image_size": 32, "max_len": 320, "early_stopping": None,
                            "model": {"channels": 8, "embed_dim": 32, "hidden": 64, "dropout": 0.0}})
        trainer = make_trainer(cfg, load_data(cfg, conversations, images))
    else:
        from lib.train.apt import from_section, loader_config, make_trainer
        cfg = from_section({"steps": 4, "batch_size": 2, "grad_accum": accum, "warmup_steps": 1,
                            "checkpoint_every": 2, "log_every": 1, "tracker": "none", "out_dir": out,
                            "ema_half_life_images": 10.0, "model": {"scale": 4, "channels": 8, "blocks": 1},
                            "disc_channels": 8, "degrade": {"scale": 4}, "loss": {"r1_every": 2, "recon": 1.0},
                            "crop": 32, "clip_frames": 4, "clip_stride": 1})
        trainer = make_trainer(cfg, loader_config(cfg, manifest))
    world = PartialState().num_processes
    if kill_at >= 0:
        inner = trainer.step_fn
        def dies(t, batch, s):
            if s == kill_at:
                raise SystemExit(3)
            return inner(t, batch, s)
        trainer.step_fn = dies
    metrics = trainer.run(progress=False)
    if PartialState().is_main_process:
        print("RESULT " + json.dumps({"world": world, "samples_seen": metrics["train/samples_seen"]}))
''')


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_clips")
    (root / "run.py").write_text(RUN)
    return write_clip_manifest(root, [20 + k for k in range(8)], ["train"] * 6 + ["validation"] * 2, 64, 96,
                               classes=[k % 2 for k in range(8)])


@pytest.fixture(scope="module")
def cad_data(tmp_path_factory, manifest):
    from tests.helpers.cad_vlm_data import write_cad_conversations

    paths = write_cad_conversations(tmp_path_factory.mktemp("ddp_cad"), count=12)
    return manifest.parent / "run.py", f"{paths['conversations']}|{paths['images']}"


def launch(manifest, trainer: str, out: Path, *, procs: int, accum: int = 1, kill_at: int = -1,
           data: str | None = None):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    script = str(manifest.parent / "run.py")
    args = [trainer, str(out), data or str(manifest), str(accum), str(kill_at)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), script]
           if procs > 1 else [sys.executable, script])
    proc = subprocess.run(cmd + args, env=env, cwd=out.parent, capture_output=True, text=True, timeout=300)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return proc, (json.loads(result[-1][7:]) if result else None)


def assert_same_weights(a_dir, b_dir, rtol=1e-6, atol=1e-7):
    a, b = final_weights(a_dir), final_weights(b_dir)
    assert a and set(a) == set(b)
    for kind in a:
        for name, tensor in a[kind].items():
            torch.testing.assert_close(b[kind][name], tensor, rtol=rtol, atol=atol, msg=f"{kind}:{name}")


def test_vae_curriculum_on_two_ranks_equals_one_process_accumulating(manifest, tmp_path):
    one, one_result = launch(manifest, "vae", tmp_path / "one", procs=1, accum=2)
    assert one.returncode == 0, one.stderr[-3000:]
    two, two_result = launch(manifest, "vae", tmp_path / "two", procs=2, accum=1)
    assert two.returncode == 0, two.stderr[-3000:]
    assert one_result == {"world": 1, "samples_seen": 24.0}  # 6 steps x batch 2 x 2 micro-batches
    assert two_result == {"world": 2, "samples_seen": 24.0}  # 6 steps x batch 2 x 2 ranks
    # rank r reads global micro-batch s*2 + r: the micro-batches one process accumulates, averaged the same way
    assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_vae_curriculum_killed_on_two_ranks_resumes_to_the_same_weights(manifest, tmp_path):
    full, _ = launch(manifest, "vae", tmp_path / "full", procs=2)
    assert full.returncode == 0, full.stderr[-3000:]
    killed, _ = launch(manifest, "vae", tmp_path / "cut", procs=2, kill_at=5)  # in phase B, checkpoint at 4
    assert killed.returncode != 0 and not (tmp_path / "cut/final").exists()
    assert max(p.name for p in (tmp_path / "cut/checkpoints").iterdir()) == "step-000004"
    resumed, result = launch(manifest, "vae", tmp_path / "cut", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert result["world"] == 2
    assert_same_weights(tmp_path / "full", tmp_path / "cut", rtol=0, atol=0)


def test_apt_on_two_ranks_trains_data_parallel_and_resumes(manifest, tmp_path):
    full, result = launch(manifest, "apt", tmp_path / "full", procs=2)
    assert full.returncode == 0, full.stderr[-3000:]
    assert result == {"world": 2, "samples_seen": 16.0}  # 4 steps x batch 2 x 2 ranks
    killed, _ = launch(manifest, "apt", tmp_path / "cut", procs=2, kill_at=3)  # checkpoint at 2
    assert killed.returncode != 0
    assert max(p.name for p in (tmp_path / "cut/checkpoints").iterdir()) == "step-000002"
    resumed, _ = launch(manifest, "apt", tmp_path / "cut", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(tmp_path / "full", tmp_path / "cut", rtol=0, atol=0)


def test_cad_vlm_on_two_ranks_equals_one_process_accumulating_and_resumes(manifest, cad_data, tmp_path):
    """The CAD VLM's epoch schedule counts the world (it read a pinned 'no distribution' before the fix too)."""
    _, data = cad_data
    one, one_result = launch(manifest, "cad", tmp_path / "one", procs=1, accum=2, data=data)
    assert one.returncode == 0, one.stderr[-3000:]
    two, two_result = launch(manifest, "cad", tmp_path / "two", procs=2, data=data)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two_result["world"] == 2 and two_result["samples_seen"] == one_result["samples_seen"]
    assert_same_weights(tmp_path / "one", tmp_path / "two", rtol=1e-5, atol=1e-6)
    killed, _ = launch(manifest, "cad", tmp_path / "cut", procs=2, kill_at=4, data=data)
    assert killed.returncode != 0
    resumed, _ = launch(manifest, "cad", tmp_path / "cut", procs=2, data=data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(tmp_path / "two", tmp_path / "cut", rtol=0, atol=0)
