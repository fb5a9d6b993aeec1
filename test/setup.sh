#!/usr/bin/env bash
# Installs what the test suites need from Debian's packages. As root it installs whatever is
# missing; otherwise it only checks, and a missing dependency fails (tests never skip).
set -euo pipefail
PACKAGES=(curl)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "test/setup.sh: missing Debian packages: ${missing[*]} (run make test as root, or install them)" >&2
  exit 1
fi
echo "test/setup.sh: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
