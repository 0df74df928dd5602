#!/usr/bin/env bash
# Runs the sandbox's tests again as an unprivileged user: CI runs as root,
# where commands drop to `nobody`; as a normal user they keep the user's id.
# Both must hold.
#
#   scripts/test-unprivileged.sh      (after `cargo test` built the tests)
#
# Exit codes: 0 passed, or nothing to do (not root: the tests already ran
# unprivileged); 3 skipped, loudly (no useradd, or the checkout cannot be
# entered by other users); 1 a test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test-unprivileged: not root, so \`cargo test\` already ran unprivileged" >&2
    exit 0
fi
skip() {
    echo "################################################################" >&2
    echo "## SKIP: the sandbox tests did not run unprivileged: $*" >&2
    echo "################################################################" >&2
    exit 3
}
command -v useradd >/dev/null 2>&1 || skip "no useradd"
dir="$PWD"
while [ "$dir" != "/" ]; do
    mode=$(stat -c %a "$dir")
    [ $((8#$mode & 1)) -eq 1 ] || skip "$dir cannot be entered by other users (mode $mode)"
    dir=$(dirname "$dir")
done
user=agentform-test
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"

# The test binaries cargo built last (the library's and the integration tests).
mapfile -t binaries < <(cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    kinds = m.get("target", {}).get("kind", [])
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and ("lib" in kinds or "test" in kinds):
        print(m["executable"])
')
[ "${#binaries[@]}" -gt 0 ] || skip "no test binaries"
failed=0
for binary in "${binaries[@]}"; do
    # The remote-loop tests run their fake's commands unconfined: they test
    # nothing of the local sandbox, and take minutes.
    echo "test-unprivileged: $binary sandbox (as $user)" >&2
    if ! su "$user" -s /bin/bash -c "cd /tmp && HOME=/home/$user '$binary' sandbox -q --skip e2b_remote:: --skip modal_remote::"; then
        failed=1
    fi
done
exit "$failed"
