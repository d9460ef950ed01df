#!/usr/bin/env bash
# Set up, then run the test suite (GPU tests are skipped without a GPU).
#
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}
exec .venv/bin/python -m pytest "$@"
