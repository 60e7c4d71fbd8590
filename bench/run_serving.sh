#!/usr/bin/env bash
# The full serving benchmark in one command, as recorded in docs/benchmarks.md.
# It installs the project with the bench extra, creates infinity-emb's own virtual
# environment on first use (about 7 GB, since it brings its own torch), and runs
# bench.serving with the recorded settings. Extra arguments go to bench.serving.
# Usage: bash bench/run_serving.sh [--infinity-venv DIR] [bench.serving flags]
set -euo pipefail
cd "$(dirname "$0")/.."

infinity_venv=${RERANK_INFINITY_VENV:-.cache/infinity-venv}
if [[ "${1:-}" == "--infinity-venv" ]]; then
    infinity_venv=$2
    shift 2
fi

bash scripts/setup.sh
.venv/bin/python -m pip install --quiet -e '.[bench]'
if [[ ! -x "$infinity_venv/bin/infinity_emb" ]]; then
    python3 -m venv "$infinity_venv"
    "$infinity_venv/bin/pip" install --quiet 'infinity-emb[all]==0.0.78'
fi

mkdir -p bench/results
exec .venv/bin/python -m bench.serving --batch-size 64 --max-batch-tokens 4096 --max-queue-delay-ms 2 \
    --infinity-venv "$infinity_venv" --plot docs/latency.png --output bench/results/serving-full.json "$@"
