"""Write a params file with a GPU preset applied, for runs without DVC (see benchmarks/run_stages.py).

    python benchmarks/gpu_params.py PRESET OUT.yaml [dotted.key=yaml_value ...] [--params params.yaml]

Reads --params (default params.yaml), applies PRESET, then each override in order, and writes OUT.yaml.

Presets (the files of conf/ that `dvc exp run -S` composes, read here without Hydra):
  apt  conf/train_apt/gpu_h200.yaml: GPU generator (channels 128, 16 blocks), disc_channels 64, 16-frame
       224 px HQ crops of the 240 px clips, batch 2, bf16, channels_last.
  vae  conf/train_curriculum/gpu_h200.yaml (lib.models.video_vae.GPU_PRESET, lib.train.curriculum.GPU_PRESET:
       256 px/8 frames -> 512/16 -> 1024/49, bf16) and conf/data/ssv2_1024.yaml (the SSv2-format data rendered
       1024 px high into folders of its own; train_video_vae and train_audio_vae null). train_curriculum.steps is
       removed (the loader rejects null), so it is the sum of the phases' steps, also after overriding them.
  cad  conf/train_cad_vlm/gpu_h200.yaml: the CNN+GRU image -> CAD-code model wider and deeper (channels 64,
       hidden 512, 2 layers) on 128 px views, batch 64, bf16, up to 60 epochs; raise synth_deepcad.count with it.

Overrides: `section.key.sub=value`, the value parsed as YAML (`null` is None, `[1, 2]` a list, `{a: 1}` a
mapping); an integer part indexes a list (`train_curriculum.curriculum.phases.0.steps=200`); missing mapping
keys below the section are created; the section must exist in the params file. E.g.

    python benchmarks/gpu_params.py vae /tmp/vae.yaml train_curriculum.tracker=none \\
        train_curriculum.curriculum.phases.2.steps=200 eval_vae.tile=null
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONF = Path(__file__).resolve().parents[1] / "conf"


def _conf(rel: str) -> dict[str, Any]:
    """A preset file of conf/ (the Hydra config groups `dvc exp run -S` composes) without its defaults list."""
    data = yaml.safe_load((CONF / rel).read_text()) or {}
    data.pop("defaults", None)
    return data


# The same files `dvc exp run -S 'train_apt=gpu_h200'`, `-S 'train_curriculum=gpu_h200' -S 'data=ssv2_1024'` and
# `-S 'train_cad_vlm=gpu_h200'` compose (tests/unit/test_conf_presets.py checks both ways agree), read without Hydra
# for machines that lack it.
PRESETS = {"apt": lambda: {"train_apt": _conf("train_apt/gpu_h200.yaml")},
           "vae": lambda: {"train_curriculum": _conf("train_curriculum/gpu_h200.yaml"), **_conf("data/ssv2_1024.yaml")},
           "cad": lambda: {"train_cad_vlm": _conf("train_cad_vlm/gpu_h200.yaml")}}


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


def parse_override(pair: str) -> tuple[str, Any]:
    """``"a.b.c=value"`` -> ``("a.b.c", value parsed as YAML)``; ValueError without an ``=``."""
    if "=" not in pair:
        raise ValueError(f"{pair}: expected dotted.key=yaml_value")
    key, value = pair.split("=", 1)
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="apt | vae | cad")
    parser.add_argument("out", help="params file to write")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=yaml_value")
    parser.add_argument("--params", default="params.yaml", help="params file to start from (default: %(default)s)")
    args = parser.parse_intermixed_args()  # --params before, between or after the positionals
    with open(args.params) as fh:
        params = yaml.safe_load(fh)
    try:
        preset(args.preset, params)
        for pair in args.overrides:
            override(params, *parse_override(pair))
    except (ValueError, yaml.YAMLError) as err:
        parser.error(str(err))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        yaml.safe_dump(params, fh, sort_keys=False)
    print(f"wrote {args.out} (preset {args.preset}, {len(args.overrides)} override(s))")


if __name__ == "__main__":
    main()
