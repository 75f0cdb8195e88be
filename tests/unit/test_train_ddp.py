"""Two-process DDP on CPU (gloo via torchrun): a killed and resumed run equals an uninterrupted one."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import sys
    import torch, torch.nn as nn, torch.nn.functional as F
    from accelerate import PartialState
    from lib.train import Trainer, TrainConfig

    out, kill_at = sys.argv[1], int(sys.argv[2])
    cfg = TrainConfig(steps=6, warmup_steps=1, grad_accum=2, checkpoint_every=3, log_every=3,
                      tracker="none", out_dir=out)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1))

    def data(start_step):  # each rank its own shard, a function of the micro-batch index
        state, i = PartialState(), start_step * cfg.grad_accum
        while True:
            g = torch.Generator().manual_seed(i * state.num_processes + state.process_index)
            yield torch.randn(cfg.batch_size, 4, generator=g)
            i += 1

    def step_fn(trainer, x, step):
        if step == kill_at:
            raise SystemExit(3)
        loss = F.mse_loss(trainer.models["net"](x), x.sum(1, keepdim=True))
        trainer.backward(loss)
        trainer.optimizer_step("net")
        return {"loss": loss.detach()}

    metrics = Trainer(cfg, {"net": net}, step_fn, data, ema_models=["net"]).run()
    assert metrics["train/samples_seen"] == 6 * 4 * 2 * 2, metrics  # steps x batch x accum x processes
''')


def _torchrun(tmp_path, out, kill_at):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "ddp_train.py"), str(out), str(kill_at)]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_ddp_resume_equals_uninterrupted(tmp_path):
    (tmp_path / "ddp_train.py").write_text(SCRIPT)
    full = _torchrun(tmp_path, tmp_path / "a", -1)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _torchrun(tmp_path, tmp_path / "b", 4)
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-000003"]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints" / "step-000003").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    resumed = _torchrun(tmp_path, tmp_path / "b", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for kind in ("raw", "ema"):
        a = load_file(str(tmp_path / "a" / "final" / kind / "net.safetensors"))
        b = load_file(str(tmp_path / "b" / "final" / kind / "net.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), kind


VAE_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from accelerate import PartialState
    from lib.losses.vae import VideoVAELoss
    from lib.train.loop import Trainer
    from lib.train.video_vae import MODEL, build_model, from_section, make_step_fn

    out, micro = sys.argv[1], int(sys.argv[2])
    cfg = from_section({"steps": 1, "batch_size": 2, "warmup_steps": 0, "tracker": "none", "out_dir": out,
                        "model": {"channels": 8, "latent_channels": 2, "temporal_compression": 2,
                                  "spatial_compression": 2, "blocks": 1}})
    grads = {}
    real_step = Trainer.optimizer_step

    def recording_step(trainer, name):  # the all-reduced gradient the optimiser is about to use
        grads.update({n: p.grad.detach().clone() for n, p in trainer.unwrap(name).named_parameters()})
        real_step(trainer, name)

    Trainer.optimizer_step = recording_step

    def data(start_step):  # each rank its own clips (PartialState only once the Trainer set up the process group)
        g = torch.Generator().manual_seed(PartialState().process_index)
        while True:
            yield {"video": torch.rand(2, 3, 4, 8, 8, generator=g) * 2 - 1, "noise_seed": 7, "micro_batch": micro}

    Trainer(cfg.train, {MODEL: build_model(cfg)}, make_step_fn(VideoVAELoss(cfg.loss)), data).run(progress=False)
    if PartialState().is_main_process:
        torch.save(grads, out + "/grads.pt")
''')


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_ddp_with_micro_batches_all_reduces_the_whole_batch_gradient(tmp_path):
    """Under DDP (2 gloo processes) the gradient every rank steps with is the same whether each rank's batch runs
    as one forward or as micro-batches of 1."""
    (tmp_path / "ddp_train.py").write_text(VAE_SCRIPT)
    for micro in (2, 1):
        proc = _torchrun(tmp_path, tmp_path / f"m{micro}", micro)
        assert proc.returncode == 0, proc.stderr[-3000:]
    whole = torch.load(tmp_path / "m2" / "grads.pt", weights_only=True)
    split = torch.load(tmp_path / "m1" / "grads.pt", weights_only=True)
    assert set(whole) == set(split) and any(float(g.abs().max()) > 1e-4 for g in whole.values())
    for name, g in whole.items():
        torch.testing.assert_close(split[name], g, rtol=1e-4, atol=1e-6, msg=name)
