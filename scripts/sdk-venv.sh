#!/usr/bin/env bash
# Create (idempotently) a Python virtual environment holding an official SDK:
# Anthropic's by default (the wire-conformance test of `agentform serve`), or
# the pinned package given (`e2b==2.63.0`: the lifecycle test of the fake E2B).
#
#   scripts/sdk-venv.sh DIR [PACKAGE==VERSION]
#
# Exit codes: 0 ready (DIR/bin/python has the package importable at that version),
#             2 usage, 3 python3 missing (or cannot create a venv), 1 other failure.
# Cache: DIR/.ready records the pin; when it matches, nothing is done.
set -euo pipefail

SDK_VERSION="${AGENTFORM_SDK_VERSION:-2.10.0}"
PIN="${2:-anthropic==${SDK_VERSION}}"

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ -z "${1:-}" ]; then
    echo "usage: $0 DIR [PACKAGE==VERSION]" >&2
    exit 2
fi
case "$PIN" in
    *==*) ;;
    *) echo "usage: $0 DIR [PACKAGE==VERSION] (a pinned version, not \`$PIN\`)" >&2; exit 2 ;;
esac
DIR="$1"
PACKAGE="${PIN%%==*}"
VERSION="${PIN##*==}"

loud() {
    {
        echo "################################################################"
        echo "## $*"
        echo "################################################################"
    } >&2
}

PYTHON="${AGENTFORM_SDK_PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    loud "SKIP: '$PYTHON' not found; cannot build the SDK venv ($PIN) in $DIR"
    exit 3
fi

if [ -f "$DIR/.ready" ] && [ "$(cat "$DIR/.ready")" = "$PIN" ] && [ -x "$DIR/bin/python" ]; then
    exit 0
fi

# Serialise concurrent callers (several tests or cargo invocations) on one DIR.
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
# Another caller may have finished while this one waited.
if [ -f "$DIR/.ready" ] && [ "$(cat "$DIR/.ready")" = "$PIN" ] && [ -x "$DIR/bin/python" ]; then
    exit 0
fi
rm -f "$DIR/.ready"

if [ ! -x "$DIR/bin/python" ]; then
    if ! "$PYTHON" -m venv "$DIR" >&2; then
        loud "SKIP: '$PYTHON -m venv' failed (is the venv module installed?); no SDK venv in $DIR"
        exit 3
    fi
fi

"$DIR/bin/python" -m pip install --disable-pip-version-check --quiet "$PIN" >&2
"$DIR/bin/python" - "$PACKAGE" "$VERSION" <<'PY'
import importlib
import importlib.metadata
import sys
package, wanted = sys.argv[1], sys.argv[2]
importlib.import_module(package)
installed = importlib.metadata.version(package)
if installed != wanted:
    sys.exit(f"installed {package} {installed}, wanted {wanted}")
PY
echo "$PIN" >"$DIR/.ready"
echo "SDK venv ready: $DIR ($PIN)" >&2
