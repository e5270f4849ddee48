#!/usr/bin/env bash
# The whole test suite from a fresh clone: system packages (as root), .venv, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v tmux >/dev/null || need+=(tmux)
  command -v ip >/dev/null || need+=(iproute2)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v dockerd >/dev/null || need+=(docker.io)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
else
  echo "not root: skipping Debian packages; tests that need root will skip"
fi

scripts/setup.sh dev,samples

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports --no-cache
echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider --durations=20 -m "not storm" "$@"
