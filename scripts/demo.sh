#!/usr/bin/env bash
# The main job on a fresh machine: install, start OpenSearch, index SciFact, start
# the sidecar, and print BM25 and reranked top hits side by side.
# Usage: scripts/demo.sh [rerank-demo arguments, e.g. --model /path/to/cross-encoder]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec .venv/bin/rerank-demo "$@"
