#!/usr/bin/env bash
# Run the whole test suite as root: lint, types, unit, contract, integration
# (real kernel, runc, conmon) and system tests. Slow tests run too.
#
# pytest runs its modules on CUMULO_TEST_WORKERS parallel workers (pytest-xdist; default 3
# on the 2-core CI host: tests wait on guests, sleeps and I/O much of the time and a third
# worker fills that; 0.77x the time of 2 on the integration tests). Each module stays
# whole on one worker (--dist loadfile: a module's shared booted guest is made once), the
# costliest modules first (tests/conftest.py). Every test has its own temp dirs (a short
# tree per run, see tests/conftest.py), netns and cgroup parent: workers do not meet.
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
  -n "${CUMULO_TEST_WORKERS:-3}" --dist loadfile "$@" || status=$?
echo "==> mypy --strict"
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
if [ "$status" -eq 0 ]; then status=$mypy_status; fi
exit "$status"
