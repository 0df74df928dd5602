#!/usr/bin/env bash
# Create (idempotently) a Python virtual environment holding the official
# Anthropic SDK, for the wire-conformance test of `agentform serve`.
#
#   scripts/sdk-venv.sh DIR
#
# Exit codes: 0 ready (DIR/bin/python has `anthropic` importable),
#             2 usage, 3 python3 missing (or cannot create a venv), 1 other failure.
# Cache: DIR/.ready records the pinned version; when it matches, nothing is done.
set -euo pipefail

SDK_VERSION="${AGENTFORM_SDK_VERSION:-2.10.0}"
PIN="anthropic==${SDK_VERSION}"

if [ "$#" -ne 1 ] || [ -z "${1:-}" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR="$1"

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
"$DIR/bin/python" - "$SDK_VERSION" <<'PY'
import sys
import anthropic
if anthropic.__version__ != sys.argv[1]:
    sys.exit(f"installed anthropic {anthropic.__version__}, wanted {sys.argv[1]}")
PY
echo "$PIN" >"$DIR/.ready"
echo "SDK venv ready: $DIR ($PIN)" >&2
