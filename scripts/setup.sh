#!/usr/bin/env bash
# Create .venv and install lanray-tui into it (with the dev tools when given "dev").
# Re-running is cheap: pip only installs when pyproject.toml changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "lanray-tui needs Python 3.10 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
extras=${1:-}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.installed${extras:+-$extras}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
