#!/usr/bin/env bash
# One-command set-up on Debian/Ubuntu with Python 3.11:
#   bash scripts/setup.sh            install what is missing (system packages, .venv with the project)
#   bash scripts/setup.sh --repro    ... then run the default pipeline (`dvc repro`) on the embedded data
#   bash scripts/setup.sh --test-packages   ... also the Debian packages of scripts/test-packages.txt (CI)
# Safe to rerun: it installs only what is missing. GPU users: see README "GPU install".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- system packages (Debian names): Mesa's EGL for headless rendering, git for DVC ---------------
lists=(scripts/system-packages.txt)
[[ "${1:-}" == "--test-packages" ]] && lists+=(scripts/test-packages.txt)
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < <(cat "${lists[@]}")
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python environment ---------------------------------------------------------------------------
py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
    py=$cand; break
  fi
done
[[ -n "$py" ]] || { echo "setup: need Python >= 3.11 (apt-get install python3.11 python3.11-venv)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

if [[ "${1:-}" == "--repro" ]]; then
  export PATH="$PWD/.venv/bin:$PATH"
  dvc repro
  echo "setup: pipeline done. Reports: reports/*/report.md; metrics: dvc metrics show"
fi
