#!/usr/bin/env bash
# Create / update the development environment for mimosa_sklearn.
#
#   bash scripts/setup_env.sh        # run directly
#   source scripts/setup_env.sh      # ...or source it: also activates .venv
#
# Idempotent: creates <repo>/.venv with python3 (>= 3.11) if missing, then runs
# `pip install -e ".[dev]"`. The install is skipped when pyproject.toml is unchanged
# since the last successful install (its sha256 is stored in .venv/.mimosa_installed).
#
# Environment knobs:
#   PYTHON=/path/to/python3.x   interpreter used to create the venv (default: python3)
#   MIMOSA_FORCE_INSTALL=1      reinstall even if pyproject.toml is unchanged

_mimosa_setup_env() {
    local repo_root venv py marker want have
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    venv="${repo_root}/.venv"
    marker="${venv}/.mimosa_installed"

    _mimosa_check_python() {
        # $1: interpreter; fails with a clear message unless it is Python >= 3.11
        "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null && return 0
        local found
        found="$("$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo 'not runnable')"
        echo "ERROR: mimosa_sklearn needs Python >= 3.11, but '$1' is: ${found}." >&2
        echo "       Install Python 3.11+ and re-run with PYTHON=/path/to/python3.11 (or newer)." >&2
        return 1
    }

    if [[ ! -x "${venv}/bin/python" ]]; then
        py="${PYTHON:-python3}"
        if ! command -v "${py}" >/dev/null 2>&1; then
            echo "ERROR: '${py}' not found. Install Python >= 3.11 or set PYTHON=..." >&2
            return 1
        fi
        _mimosa_check_python "${py}" || return 1
        echo "==> Creating virtual environment in ${venv} ($("${py}" --version 2>&1))"
        "${py}" -m venv "${venv}" || {
            echo "ERROR: '${py} -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)." >&2
            return 1
        }
        rm -f "${marker}"
    else
        _mimosa_check_python "${venv}/bin/python" || {
            echo "       Delete ${venv} to recreate it." >&2
            return 1
        }
    fi

    # Marker = hash of pyproject.toml + the repo path (an editable install is path-bound).
    want="$(cd "${repo_root}" && sha256sum pyproject.toml | cut -d' ' -f1) ${repo_root}" || return 1
    have="$(cat "${marker}" 2>/dev/null || true)"

    if [[ "${want}" == "${have}" && "${MIMOSA_FORCE_INSTALL:-0}" != "1" ]]; then
        echo "==> Environment up to date (${venv}); skipping install."
    else
        echo "==> Upgrading pip"
        "${venv}/bin/python" -m pip install --quiet --upgrade pip \
            || echo "WARNING: could not upgrade pip; continuing with the bundled version." >&2
        echo "==> Installing mimosa_sklearn in editable mode with [dev] extras"
        (cd "${repo_root}" && "${venv}/bin/python" -m pip install --quiet -e ".[dev]") || {
            echo "ERROR: 'pip install -e .[dev]' failed." >&2
            rm -f "${marker}"
            return 1
        }
        printf '%s\n' "${want}" > "${marker}"
        echo "==> Install complete."
    fi

    # Put the venv first on PATH for the caller (when sourced) without requiring `activate`.
    export VIRTUAL_ENV="${venv}"
    case ":${PATH}:" in
        *":${venv}/bin:"*) ;;
        *) export PATH="${venv}/bin:${PATH}" ;;
    esac
    export MIMOSA_REPO_ROOT="${repo_root}"
    # Headless-safe default for plotting in tests, demos and CI.
    export MPLBACKEND="${MPLBACKEND:-Agg}"
    return 0
}

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    # Executed directly.
    set -euo pipefail
    _mimosa_setup_env
else
    # Sourced: never `exit` the caller's shell; report failure via the return status.
    _mimosa_setup_env || return 1
fi
