#!/usr/bin/env bash
# Lint + test mimosa_sklearn. Extra arguments are passed to pytest, e.g.
#   bash scripts/run_tests.sh -m "not slow"
#   bash scripts/run_tests.sh tests/core -x
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

# shellcheck source=setup_env.sh
source "${REPO_ROOT}/scripts/setup_env.sh"

echo "==> ruff check ."
ruff check .

echo "==> python -m pytest -q $*"
rc=0
python -m pytest -q "$@" || rc=$?
if [[ ${rc} -eq 5 ]]; then
    echo "==> pytest collected no tests (exit code 5); treating as success."
    rc=0
fi
exit "${rc}"
