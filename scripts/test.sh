#!/usr/bin/env bash
# The whole test suite from a fresh clone: system packages (as root), .venv, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v tmux >/dev/null || need+=(tmux)
  command -v ip >/dev/null || need+=(iproute2)
  command -v nft >/dev/null || need+=(nftables)
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
args=(-q -p no:cacheprovider --durations=20)
if [ $# -gt 0 ]; then  # a tier or file given ('make storm'): one run, as asked
  echo "== pytest $*"
  exec .venv/bin/pytest "${args[@]}" "$@"
fi

# The whole suite in two runs side by side: the lab tier (real Ray clusters, which spend
# much of their time waiting on Ray) and the rest. Each has its own lab name and prints its
# own durations; the suite fails if either does. The lab run's output comes live.
LAB=${LANRAY_TEST_LAB:-t}
OWN_LABS=(tests/lab/test_installed.py tests/lab/test_capture.py tests/lab/test_hostile.py
  tests/lab/test_lab.py tests/lab/test_owner_returns.py)
rest_log=$(mktemp)
trap 'rm -f "$rest_log"' EXIT
echo "== pytest, two runs side by side: the lab tier, and the rest (its output at the end)"
LANRAY_TEST_LAB="${LAB:0:6}r" .venv/bin/pytest "${args[@]}" -m "not storm" \
  tests/unit tests/tui tests/samples tests/docker "${OWN_LABS[@]}" >"$rest_log" 2>&1 &
rest=$!
lab_rc=0
.venv/bin/pytest "${args[@]}" -m "not storm" tests/lab \
  $(printf -- '--ignore=%s ' "${OWN_LABS[@]}") || lab_rc=$?
rest_rc=0
wait "$rest" || rest_rc=$?
echo "== pytest: the rest (unit, tui, samples, docker, and the lab tests with labs of their own)"
cat "$rest_log"
echo "== pytest: lab tier exit $lab_rc, the rest exit $rest_rc"
[ "$lab_rc" = 0 ] && [ "$rest_rc" = 0 ]
