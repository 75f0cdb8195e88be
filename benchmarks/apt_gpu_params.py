"""Write a params file for train_apt's GPU preset: `python benchmarks/apt_gpu_params.py OUT.yaml [key=value ...]`.

The same overrides as the README's `dvc exp run -S` recipe (GPU_PRESET generator, 16 frames, 224 px HQ crops of
the 240 px clips, bf16, channels_last_3d); extra `key=value` pairs (YAML values) override train_apt keys.
"""
from __future__ import annotations

import sys

import yaml

GPU_PRESET = {"model": {"scale": 4, "channels": 128, "blocks": 16, "text_dim": 0}, "disc_channels": 64,
              "crop": 224, "clip_frames": 16, "clip_stride": 1, "batch_size": 2, "mixed_precision": "bf16",
              "channels_last": True}

if __name__ == "__main__":
    with open("params.yaml") as fh:
        params = yaml.safe_load(fh)
    params["train_apt"].update(GPU_PRESET)
    for pair in sys.argv[2:]:
        key, value = pair.split("=", 1)
        params["train_apt"][key] = yaml.safe_load(value)
    with open(sys.argv[1], "w") as fh:
        yaml.safe_dump(params, fh, sort_keys=False)
