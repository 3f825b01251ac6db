# Sourced by the ci/ scripts: a project virtualenv in .venv with the package and the given extras.
# Set DASK_FAAS_PYTHON to use an existing interpreter instead (no venv, no install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${DASK_FAAS_PYTHON:-}" ]; then
  PY="$DASK_FAAS_PYTHON"
else
  extras="${1:-}"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  PY=.venv/bin/python
  stamp=".venv/.installed-${extras:-base}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
fi
export PY
