#!/usr/bin/env bash
# Sets up the environment and runs the end-to-end demo; extra arguments go to
# `ranker-edge demo` (e.g. --json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/setup.sh"
set -euo pipefail
ranker-edge demo "$@"
