#!/usr/bin/env bash
# Run the test suite: unit tests, a real sidecar process and a real OpenSearch node.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The compose file check needs docker-compose (Debian's package; as root it is installed).
bash scripts/check_compose.sh

export RERANK_TEST_REQUIRE_OPENSEARCH=1
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit $status
