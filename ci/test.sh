#!/usr/bin/env bash
# The test command: lint, then the whole suite (slow checks included). Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh" test
"$PY" -m ruff check .
"$PY" -m ruff format --check .
exec "$PY" -m pytest "$@"
