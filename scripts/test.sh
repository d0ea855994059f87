#!/usr/bin/env bash
# Run the whole test suite as root: lint, types, unit, contract, integration
# (real kernel, runc, conmon) and system tests. Slow tests run too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "==> ruff"
.venv/bin/ruff check src tests bench
echo "==> mypy --strict"
.venv/bin/mypy
echo "==> pytest"
exec .venv/bin/pytest -p no:cacheprovider -ra --durations=25 "$@"
