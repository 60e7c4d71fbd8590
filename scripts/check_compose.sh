#!/usr/bin/env bash
# Validate a Compose file without a Docker engine: `config -q` parses the file,
# resolves variables and checks it against the Compose schema, and exits non-zero
# on any error. It never contacts the engine.
#
# Usage: scripts/check_compose.sh [COMPOSE_FILE]   (default: deploy/docker-compose.yml)
#
# It prefers the Compose v2 plugin (`docker compose`) and falls back to the
# standalone `docker-compose`. When neither exists and the script runs as root, it
# installs Debian's docker-compose package, which is Compose 1.29.2 on bookworm.
# --no-install-recommends keeps apt from pulling in docker.io, the engine.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compose_file="${1:-$repo_root/deploy/docker-compose.yml}"

if [[ ! -f "$compose_file" ]]; then
    echo "check_compose: compose file not found: $compose_file" >&2
    exit 2
fi

find_compose() {
    if command -v docker > /dev/null 2>&1 && docker compose version > /dev/null 2>&1; then
        compose=(docker compose)
    elif command -v docker-compose > /dev/null 2>&1; then
        compose=(docker-compose)
    else
        compose=()
    fi
}

compose=()
find_compose

if [[ ${#compose[@]} -eq 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get > /dev/null 2>&1; then
        echo "check_compose: neither 'docker compose' nor 'docker-compose' is installed." >&2
        echo "Install one, e.g. as root on Debian: apt-get install --no-install-recommends docker-compose" >&2
        exit 3
    fi
    echo "check_compose: installing Debian's docker-compose package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker-compose > /dev/null
    find_compose
    if [[ ${#compose[@]} -eq 0 ]]; then
        echo "check_compose: docker-compose is still not on PATH after apt-get install" >&2
        exit 3
    fi
fi

echo "check_compose: ${compose[*]} -f $compose_file config -q" >&2
"${compose[@]}" -f "$compose_file" config -q
echo "check_compose: $compose_file is valid"
