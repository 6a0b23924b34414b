#!/usr/bin/env bash
# apt-install.sh BINARY PACKAGE...: installs Debian packages unless BINARY is already there.
# For the test and benchmark tools (chromium, firefox-esr, wrk): only Debian's packages, never a browser
# build of its own. Quiet and idempotent: prints apt-get's output only when something fails. Needs root or sudo.
set -euo pipefail
binary="$1"; shift
command -v "$binary" >/dev/null 2>&1 && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "apt-install.sh: $binary is missing and this is not root" >&2; exit 1; }
    SUDO="sudo"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    if ! "$@" >>"$log" 2>&1; then
        echo "apt-install.sh: failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}
export DEBIAN_FRONTEND=noninteractive
run $SUDO apt-get update -q
run $SUDO apt-get install -y -q --no-install-recommends "$@"
command -v "$binary" >/dev/null 2>&1 || { echo "apt-install.sh: installed $*, but $binary is still missing" >&2; exit 1; }
