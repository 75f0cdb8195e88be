#!/usr/bin/env bash
# Install what is missing, lint, then run the whole test suite (unit, stage and pipeline tests):
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check .                      # rules in pyproject.toml [tool.ruff.lint]
.venv/bin/snakemake --lint                  # the workflow (Snakefile, rules/)
exec .venv/bin/python -m pytest -n 2 --dist worksteal "$@"   # worksteal: idle workers take queued tests (9 min vs 15)
