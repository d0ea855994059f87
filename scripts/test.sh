#!/usr/bin/env bash
# Run the whole test suite as root: lint, types, unit, contract, integration
# (real kernel, runc, conmon) and system tests. Slow tests run too.
#
# pytest runs its modules on CUMULO_TEST_WORKERS parallel workers (pytest-xdist, default
# 2): each module stays whole on one worker (--dist loadfile: module fixtures such as a
# booted guest are made once), the costliest modules start first (tests/conftest.py).
# Every test has its own temp dirs (a short tree per run, see tests/conftest.py), netns and
# cgroup parent, so workers do not meet.
# mypy runs beside pytest. Extra arguments go to pytest (`-n 0`: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "==> ruff"
.venv/bin/ruff check src tests bench
echo "==> mypy --strict (beside pytest; its verdict follows pytest's)"
mypy_log=$(mktemp)
trap 'rm -f "$mypy_log"' EXIT
.venv/bin/mypy >"$mypy_log" 2>&1 &
mypy_pid=$!
echo "==> pytest"
status=0
.venv/bin/pytest -p no:cacheprovider -ra --durations=25 \
  -n "${CUMULO_TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
echo "==> mypy --strict"
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
if [ "$status" -eq 0 ]; then status=$mypy_status; fi
exit "$status"
