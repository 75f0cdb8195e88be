"""Shared command-line plumbing for stages: --params, logging set-up, clean error exits."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from lib.config import ConfigError
from lib.io import DataError, UnsafePathError


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Return an argparse parser for ``python -m stages.<name>`` with the shared ``--params`` flag."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file to read (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (e.g. in logs)")
    return parser


def run_stage(main: Callable[[], int | None]) -> None:
    """Run a stage's main: log to stderr; a bad param, a missing or malformed input, or a failed check exits 1
    with its message (no traceback). Anything else is a bug and keeps its traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        code = main()
    except (ConfigError, DataError, UnsafePathError, FileNotFoundError, StageCheckFailed) as err:
        logging.getLogger("stage").error("%s", err)
        sys.exit(1)
    sys.exit(code or 0)


class StageCheckFailed(RuntimeError):
    """A stage's own check (e.g. a validation threshold) failed after it wrote its report."""
