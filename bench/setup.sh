#!/usr/bin/env bash
# Installs what the benchmark needs from Debian's packages: wrk (load generator) and curl.
# As root it installs whatever is missing; otherwise a missing package is an error.
set -euo pipefail
PACKAGES=(wrk curl)

missing=()
for pkg in "${PACKAGES[@]}"; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/setup.sh: missing: ${missing[*]} — run 'make bench' as root, or 'apt-get install ${missing[*]}'" >&2
  exit 1
fi
echo "bench/setup.sh: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
