#!/usr/bin/env bash
# The test command: lint, then the whole suite (slow checks included) on two pytest workers (most
# tests wait on processes and servers, not the CPU). Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh" test
"$PY" -m ruff check .
"$PY" -m ruff format --check .
exec "$PY" -m pytest -n "${DASK_FAAS_TEST_WORKERS:-2}" "$@"
