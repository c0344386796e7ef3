#!/usr/bin/env bash
# The Python package: builds it with maturin into a venv and runs its tests (pytest), which compare
# it with the CLI's JSON and run scripts/ray_batch.py on a local Ray cluster.
#   bash scripts/python-tests.sh            (venv: $PRISM_VENV, default /var/cache/prism-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${PRISM_VENV:-/var/cache/prism-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check \
    "maturin==1.16.0" "numpy==2.3.5" "pytest==8.4.2" "ray[data]==2.60.0" "datasets==5.2.0"
cargo build --release --quiet --workspace
(cd python && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --release --quiet)
PRISM_REQUIRE_RAY=1 PRISM_BIN="$CARGO_TARGET_DIR/release/prism" RAY_USAGE_STATS_ENABLED=0 \
    "$VENV/bin/python" -m pytest -q python/tests
