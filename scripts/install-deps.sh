#!/usr/bin/env bash
# Installs the Debian packages ehrledger needs to build, test, demo and
# benchmark (pgaudit, which bench/access_log.sh compares with), if
# any is missing, and the FHIR validators of test/fhir (npm ci, versions
# pinned by its package-lock.json).  Runs as root (as CI does) or through sudo.
set -euo pipefail

packages=(
    postgresql-15 postgresql-server-dev-15 libsodium-dev libssl-dev
    postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
    libipc-run-perl postgresql-15-partman make gcc
    postgresql-15-pgaudit
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# Node.js may come from elsewhere than Debian (with npm inside it).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "ehrledger: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The FHIR validators, exactly as package-lock.json pins them.
fhir_dir="$(dirname "$0")/../test/fhir"
if [ ! -f "$fhir_dir/node_modules/.package-lock.json" ] \
   || [ "$fhir_dir/package-lock.json" -nt "$fhir_dir/node_modules/.package-lock.json" ]; then
    echo "ehrledger: installing the FHIR validators (npm ci in test/fhir)"
    (cd "$fhir_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
