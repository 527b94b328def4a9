#!/usr/bin/env bash
# Sets up the environment, then runs ruff, mypy (central/ and edge/) and the whole
# test suite, slow tests included (`bash scripts/test.sh -m "not slow"` skips those).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/setup.sh"
set -euo pipefail
cd "$root"
ruff check .
mypy
python -m pytest "$@"
