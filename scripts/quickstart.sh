#!/usr/bin/env bash
# Set up the environment (first run only) and run the MagmaClust demo:
# fits on bundled data, prints a metrics table, saves a forecast plot to
# outputs/forecast_<dataset>.png (or to --output PATH).
# Extra arguments are passed to `python -m mimosa_sklearn.demo`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

# shellcheck source=setup_env.sh
source "${REPO_ROOT}/scripts/setup_env.sh"

echo "==> python -m mimosa_sklearn.demo $*"
exec python -m mimosa_sklearn.demo "$@"
