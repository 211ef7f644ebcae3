#!/usr/bin/env bash
# Installs the Debian packages ehrledger needs to build, test and demo, if
# any is missing.  Runs as root (as CI does) or through sudo.
set -euo pipefail

packages=(
    postgresql-15 postgresql-server-dev-15 libsodium-dev libssl-dev
    postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
    libipc-run-perl make gcc
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ehrledger: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
