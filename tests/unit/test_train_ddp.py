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
