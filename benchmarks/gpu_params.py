"""Write a params file with a GPU preset applied, for runs without DVC (see benchmarks/run_stages.py).

    python benchmarks/gpu_params.py PRESET OUT.yaml [dotted.key=yaml_value ...] [--params params.yaml]

Reads --params (default params.yaml), applies PRESET, then each override in order, and writes OUT.yaml.

Presets:
  apt  train_apt's GPU preset (the README's `dvc exp run -S` recipe): GPU_PRESET generator (channels 128,
       16 blocks), disc_channels 64, 16-frame 224 px HQ crops of the 240 px clips, batch 2, bf16, channels_last.
  vae  the video VAE curriculum on 1024 px clips: train_curriculum gets lib.models.video_vae.GPU_PRESET,
       lib.train.curriculum.GPU_PRESET (256 px/8 frames -> 512/16 -> 1024/49) and bf16; train_video_vae and
       train_audio_vae are null (eval_vae scores the curriculum run alone); the SSv2-format data is rendered
       1024 px high into folders of its own (synth_ssv2, ssv2.root, ingest_ssv2 in keep mode, validate_ssv2's
       report, bench_loader's out/tmp_dir/report_dir, eval_vae's report); validate_ssv2.exposure_trainers is []
       (train_curriculum has no top-level steps/batch_size for it to read); eval_vae.chunk_frames 8 (a multiple
       of tc 4). train_curriculum.steps is removed (the loader rejects null), so it is the sum of the phases'
       steps, also after overriding them.

Overrides: `section.key.sub=value`, the value parsed as YAML (`null` is None, `[1, 2]` a list, `{a: 1}` a
mapping); an integer part indexes a list (`train_curriculum.curriculum.phases.0.steps=200`); missing mapping
keys below the section are created; the section must exist in the params file. E.g.

    python benchmarks/gpu_params.py vae /tmp/vae.yaml train_curriculum.tracker=none \\
        train_curriculum.curriculum.phases.2.steps=200 eval_vae.tile=null
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

APT_PRESET = {"model": {"scale": 4, "channels": 128, "blocks": 16, "text_dim": 0}, "disc_channels": 64,
              "crop": 224, "clip_frames": 16, "clip_stride": 1, "batch_size": 2, "mixed_precision": "bf16",
              "channels_last": True}


def _plain(cfg: Any, omit_defaults: bool = False) -> dict[str, Any]:
    """A Checked dataclass as a YAML-ready dict (tuples as lists); ``omit_defaults`` drops fields at their default."""
    import dataclasses

    from lib.config import to_dict

    out = to_dict(cfg)
    if omit_defaults:
        defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
        out = {k: v for k, v in out.items() if k not in defaults or v != defaults[k]}
    return out


def vae_preset() -> dict[str, dict[str, Any]]:
    """Section -> keys to set (None: the whole section becomes null) for the ``vae`` preset."""
    from lib.models.video_vae import GPU_PRESET as MODEL
    from lib.train.curriculum import GPU_PRESET as CURRICULUM

    curriculum = {"gradient_checkpointing": CURRICULUM.gradient_checkpointing,
                  "phases": [_plain(p, omit_defaults=True) for p in CURRICULUM.phases]}
    return {
        "train_curriculum": {"mixed_precision": "bf16", "model": _plain(MODEL), "curriculum": curriculum},
        "train_video_vae": None,
        "train_audio_vae": None,
        "synth_ssv2": {"out": "data/raw/ssv2_synth_1024", "height": 1024, "widths": [1365, 1820], "fps": 12,
                       "min_seconds": 4.5, "max_seconds": 5.5},  # >= 54 frames: a 49-frame clip fits
        "ssv2": {"root": "data/raw/ssv2_synth_1024"},
        "ingest_ssv2": {"out": "data/interim/ssv2_1024", "mode": "keep", "expected_height": 1024},
        "validate_ssv2": {"report_dir": "reports/validate_ssv2_1024", "exposure_trainers": []},
        "bench_loader": {"out": "data/loader_1024", "tmp_dir": "data/loader_1024/tmp",
                         "report_dir": "reports/bench_loader_1024"},
        "eval_vae": {"report_dir": "reports/eval_vae_1024", "chunk_frames": 8},  # a multiple of tc = 4
    }


PRESETS = {"apt": lambda: {"train_apt": copy.deepcopy(APT_PRESET)}, "vae": vae_preset}


def preset(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` with preset ``name`` applied (in place)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    for section, keys in PRESETS[name]().items():
        if keys is None or params.get(section) is None:
            params[section] = keys
        else:
            params[section].update(keys)
    if name == "vae":
        params["train_curriculum"].pop("steps", None)  # from_section: absent = sum of the phases' steps
    return params


def override(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``params[a][b]...[z] = value`` for ``dotted`` = ``a.b....z``; integer parts index lists."""
    parts = dotted.split(".")
    if parts[0] not in params:
        raise ValueError(f"{dotted}: unknown section {parts[0]!r} (sections: {', '.join(params)})")
    node: Any = params
    for i, part in enumerate(parts):
        where = ".".join(parts[:i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ValueError(f"{dotted}: {where}: not an index of a list of {len(node)}")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
            if not last and node.get(key) is None:
                node[key] = {}
        else:
            raise ValueError(f"{dotted}: {'.'.join(parts[:i])} is {node!r}, not a mapping or list")
        if last:
            node[key] = value
        else:
            node = node[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="apt | vae")
    parser.add_argument("out", help="params file to write")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=yaml_value")
    parser.add_argument("--params", default="params.yaml", help="params file to start from (default: %(default)s)")
    args = parser.parse_intermixed_args()  # --params before, between or after the positionals
    with open(args.params) as fh:
        params = yaml.safe_load(fh)
    try:
        preset(args.preset, params)
        for pair in args.overrides:
            if "=" not in pair:
                raise ValueError(f"{pair}: expected dotted.key=yaml_value")
            key, value = pair.split("=", 1)
            override(params, key, yaml.safe_load(value))
    except (ValueError, yaml.YAMLError) as err:
        parser.error(str(err))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        yaml.safe_dump(params, fh, sort_keys=False)
    print(f"wrote {args.out} (preset {args.preset}, {len(args.overrides)} override(s))")


if __name__ == "__main__":
    main()
