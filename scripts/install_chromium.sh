#!/usr/bin/env bash
# Installs Debian's chromium (for the browser tests in tests/browser/) if /usr/bin/chromium is missing.
# Quiet and idempotent: prints nothing on success, apt-get's output only when something fails.
# Needs root (or sudo). Only Debian's package: never downloads a browser build of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_chromium.sh: /usr/bin/chromium is missing and this is not root (no sudo either)" >&2
        exit 1
    fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    if ! "$@" >>"$log" 2>&1; then
        echo "install_chromium.sh: failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

export DEBIAN_FRONTEND=noninteractive
run $SUDO apt-get update -q
run $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core

if [ ! -x /usr/bin/chromium ]; then
    echo "install_chromium.sh: apt-get finished but /usr/bin/chromium is still missing" >&2
    exit 1
fi
