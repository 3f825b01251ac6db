#!/usr/bin/env bash
# The main job on the embedded default: Monte Carlo option pricing, 10^8 draws over 100 invocations.
# Extra arguments go to examples/monte_carlo.py (try --help).
source "$(dirname "$0")/_env.sh" ""
exec "$PY" examples/monte_carlo.py "$@"
