"""Check or rewrite each dvc.yaml stage's code deps to the import closure of what the stage runs.

    python scripts/sync_code_deps.py           rewrite dvc.yaml where it disagrees, list the stages changed
    python scripts/sync_code_deps.py --check   list the disagreements and exit 1 if there are any

Only code deps (``.py`` files and directories of them under lib/ and stages/, and the Snakemake files of a
fan-out stage) are touched; data deps, their order and every comment stay.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.dag import code_deps_problems, sync_code_deps  # noqa: E402  (after the path set-up above)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when dvc.yaml disagrees")
    args = parser.parse_args()
    if args.check:
        problems = code_deps_problems()
        print("\n".join(problems) or "dvc.yaml code deps match every stage's import closure")
        return 1 if problems else 0
    changed = sync_code_deps()
    print(f"rewrote the code deps of: {', '.join(changed)}" if changed else "dvc.yaml already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
