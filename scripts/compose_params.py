"""Write params.yaml from conf/ the way `dvc exp run -S ...` does (DVC's Hydra composition), for `dvc repro`.

    python scripts/compose_params.py [OVERRIDE ...]     e.g. train_apt=gpu_h200, render_deepcad.shards=512
    python scripts/compose_params.py --check            exit 1 when params.yaml is not conf/'s composition

conf/ is the source of every knob (conf/config.yaml and the preset groups under it); params.yaml is what DVC,
Snakemake and the stages read. Edit conf/, then run this (or `dvc exp run -S ...`, which composes it too).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HEADER = ("# Composed from conf/ (Hydra; edit there): `python scripts/compose_params.py` or `dvc exp run -S ...`\n"
          "# rewrites this file. DVC, Snakemake and the stages (through lib/config) read it.\n")


def compose(overrides: list[str], conf: Path = REPO / "conf") -> str:
    """Return params.yaml's text composed from ``conf`` with Hydra ``overrides`` (DVC's own function)."""
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(conf.resolve()), None, "config", str(conf.parent), overrides)
        return HEADER + out.read_text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as after `dvc exp run -S`")
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--out", type=Path, default=REPO / "params.yaml")
    args = ap.parse_args()
    text = compose(args.overrides)
    if args.check:
        current = yaml.safe_load(args.out.read_text()) if args.out.is_file() else None
        if current != yaml.safe_load(text):
            print(f"{args.out} is not the composition of conf/: run `python scripts/compose_params.py`",
                  file=sys.stderr)
            return 1
        print(f"{args.out} matches conf/")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
