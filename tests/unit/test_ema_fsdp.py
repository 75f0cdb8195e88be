"""EMA on FSDP2-sharded modules (2 gloo processes on CPU, ``fully_shard`` as accelerate's FSDP v2 applies it):
the shadow stays sharded like the parameters, its average equals one unsharded process's, its checkpoint holds whole
plain tensors that load with ``weights_only=True`` and cut back into shards, and export through ``swapped_into``
gathers the EMA weights whole (issue 17: "EMA and final export working on sharded modules")."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

WORKER = textwrap.dedent('''
    import json, sys
    import torch, torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from lib.train.ema import EMA

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.BatchNorm1d(10), torch.nn.SiLU(),
                                   torch.nn.Linear(10, 3))

    ref, model = make(), make()
    for layer in (model[0], model[3]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    ema_ref, ema = EMA(ref, 4.0), EMA(model, 4.0)
    opts = [torch.optim.SGD(m.parameters(), lr=0.2) for m in (ref, model)]
    for step in range(3):  # the same batch on every rank: the sharded gradient (averaged) equals the reference's
        torch.manual_seed(100 + step)
        x = torch.randn(8, 6)
        for m, opt in zip((ref, model), opts):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        ema_ref.update(ref, 8)
        ema.update(model, 8)

    whole = ema.state_dict()  # a collective: every rank calls it
    saved = f"{sys.argv[1]}/ema_{rank}.pt"
    torch.save(whole, saved)
    loaded = torch.load(saved, weights_only=True)
    ema2 = EMA(model, 4.0)
    ema2.load_state_dict(loaded)
    again = ema2.state_dict()
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    with ema.swapped_into(model):
        exported = get_model_state_dict(model, options=full)
    after = get_model_state_dict(model, options=full)

    def diff(a, b):
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in b)

    ref_ema = {**ema_ref.params, **ema_ref.buffers}
    result = {
        "shadow_sharded": isinstance(ema.params["0.weight"], DTensor),
        "local_rows": ema.params["0.weight"].to_local().shape[0],
        "whole_plain": not any(isinstance(t, DTensor) for t in whole["params"].values()),
        "state_vs_ref": max(diff(whole["params"], ema_ref.params), diff(whole["buffers"], ema_ref.buffers)),
        "ema_moved": max(float((ema_ref.params[k] - ref.state_dict()[k]).abs().max()) for k in ema_ref.params),
        "round_trip": max(diff(again["params"], whole["params"]), diff(again["buffers"], whole["buffers"])),
    }
    if rank == 0:  # full state dicts land on rank 0 only
        result["export_vs_ref"] = diff(exported, ref_ema)
        result["restored_vs_ref_model"] = diff(after, ref.state_dict())
    # a file per rank: the two ranks' stdout can interleave on one line under torchrun
    with open(f"{sys.argv[1]}/result_{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()
''')


def test_ema_of_a_sharded_model_equals_the_unsharded_one_saves_whole_and_exports(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {str(rank): json.loads((tmp_path / f"result_{rank}.json").read_text()) for rank in range(2)}
    assert set(results) == {"0", "1"}, proc.stdout
    for r in results.values():
        assert r["shadow_sharded"] and r["local_rows"] == 5  # 10 rows of Linear(6, 10): half on each rank
        assert r["whole_plain"]
        assert r["ema_moved"] > 1e-3  # the EMA lags the trained weights: the comparisons below are not vacuous
        assert r["state_vs_ref"] < 1e-6 and r["round_trip"] == 0.0
    assert results["0"]["export_vs_ref"] < 1e-6  # swapped_into + a full state dict: the EMA weights, whole
    assert results["0"]["restored_vs_ref_model"] < 1e-6  # and the model's own weights back after the block
