#!/usr/bin/env bash
# Make bubblewrap (`bwrap`) available, for the confined sandbox of the local
# runtime and its tests.
#
#   scripts/install-bubblewrap.sh
#
# Exit codes: 0 `bwrap` is on PATH (installed now or before);
#             3 it is missing and cannot be installed here (not root, or no apt-get);
#             1 the install failed.
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bubblewrap is not installed and this script can only install it as root with apt-get;" >&2
    echo "install the package \`bubblewrap\` with your system's package manager" >&2
    exit 3
fi
# Serialise concurrent callers (tests run in parallel).
exec 9>/tmp/agentform-install-bubblewrap.lock
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends bubblewrap >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends bubblewrap >&2
fi
command -v bwrap >/dev/null 2>&1
echo "bubblewrap installed: $(bwrap --version)" >&2
