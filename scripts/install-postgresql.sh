#!/usr/bin/env bash
# Make PostgreSQL's server programs (`initdb`, `postgres`) available, for the
# PostgreSQL state's tests and benchmark; prints the directory that holds
# them on stdout.
#
#   scripts/install-postgresql.sh
#
# Exit codes: 0 the programs are there (installed now or before; their
#               directory on stdout);
#             3 they are missing and cannot be installed here (not root, or no apt-get);
#             1 the install failed.
set -euo pipefail

# Debian keeps the server's programs out of PATH, under a versioned directory.
find_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if find_bin; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL is not installed and this script can only install it as root with apt-get;" >&2
    echo "install the package \`postgresql\` with your system's package manager" >&2
    exit 3
fi
# Serialise concurrent callers (tests run in parallel).
exec 9>/tmp/agentform-install-postgresql.lock
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if find_bin; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The tests start clusters of their own: the package's default cluster is not
# created (Debian's `create_main_cluster`), nor started.
mkdir -p /etc/postgresql-common
if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
fi
if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends postgresql >&2
fi
bin=$(find_bin)
echo "PostgreSQL installed: $("$bin/postgres" --version)" >&2
echo "$bin"
