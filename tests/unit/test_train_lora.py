"""LoRA through peft: only adapters train, merging keeps outputs, init_from reports bad keys."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from lib.train.config import TrainConfig
from lib.train.loop import Trainer
from lib.train.lora import InitFromError, apply_lora, has_lora, init_from, merge_lora, resolve_lora_targets


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):  # x: (B, 1, 6, 6)
        return self.head(self.conv(x).mean((2, 3)))


def _net(seed=0):
    torch.manual_seed(seed)
    return TinyNet()


def test_targets_are_globs_or_suffixes():
    assert resolve_lora_targets(_net(), ["head.*"]) == ["head.0", "head.2"]
    assert resolve_lora_targets(_net(), ["conv", "2"]) == ["conv", "head.2"]
    with pytest.raises(ValueError, match="matches no Linear/Conv"):
        resolve_lora_targets(_net(), ["attn.to_q"])


def test_only_lora_params_train_and_merge_keeps_outputs():
    model = apply_lora(_net(), rank=2, alpha=4, targets=["conv", "head.*"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # lora_B starts at zero; make the adapters do something
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    x = torch.randn(3, 1, 6, 6)
    adapted = model(x)
    assert not torch.allclose(adapted, _net()(x))
    merged = merge_lora(model)
    assert not has_lora(merged)
    assert sorted(merged.state_dict()) == sorted(_net().state_dict())
    assert all(p.requires_grad for p in merged.parameters())  # full fine-tuning from here
    torch.testing.assert_close(merged(x), adapted, rtol=1e-5, atol=1e-6)


def test_init_from_loads_and_reports_bad_keys(tmp_path):
    source = _net(seed=1)
    good = tmp_path / "good.safetensors"
    save_file(source.state_dict(), str(good))
    target = init_from(_net(seed=2), good)
    assert torch.equal(target.head[0].weight, source.head[0].weight)

    state = dict(source.state_dict())
    state["head.9.weight"] = state.pop("head.2.weight")
    state["conv.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(InitFromError) as err:
        init_from(_net(), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing keys: head.2.weight" in msg and "unexpected keys: head.9.weight" in msg
    assert "conv.bias: file (5,) vs model (4,)" in msg
    with pytest.raises(InitFromError, match="not found"):
        init_from(_net(), tmp_path / "nope.safetensors")


def test_lora_run_trains_adapters_only_and_exports_merged_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base"
    base.mkdir()
    save_file(_net(seed=3).state_dict(), str(base / "net.safetensors"))
    cfg = TrainConfig(steps=4, warmup_steps=1, lr=1e-2, tracker="none", out_dir=str(tmp_path / "run"),
                      init_from=str(base), training_mode="lora", lora_rank=2, lora_alpha=4,
                      lora_targets=["head.*"])

    def data(start_step):
        i = start_step
        while True:
            g = torch.Generator().manual_seed(i)
            yield torch.randn(cfg.batch_size, 1, 6, 6, generator=g)
            i += 1

    def step_fn(trainer, x, step):
        loss = F.mse_loss(trainer.models["net"](x), x.mean((1, 2, 3))[:, None] * 3)
        trainer.backward(loss)
        trainer.optimizer_step("net")
        return {"loss": loss.detach()}

    trainer = Trainer(cfg, {"net": _net(seed=0)}, step_fn, data)
    trainer.run()
    model = trainer.unwrap("net")
    reference = _net(seed=3)
    # base weights came from init_from and stayed frozen; the adapters moved
    assert torch.equal(model.head[0].base_layer.weight, reference.head[0].weight)
    assert torch.equal(model.conv.weight, reference.conv.weight)
    assert not torch.equal(model.head[0].lora_B.default.weight, torch.zeros_like(model.head[0].lora_B.default.weight))
    # final/raw holds merged, plain weights: a plain model loads them and matches the adapted one
    plain = init_from(_net(), tmp_path / "run" / "final" / "raw" / "net.safetensors")
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(plain(x), model(x), rtol=1e-5, atol=1e-6)
