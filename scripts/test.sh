#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite, slow tests included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/setup.sh"
set -euo pipefail
cd "$root"
ruff check .
python -m pytest "$@"
