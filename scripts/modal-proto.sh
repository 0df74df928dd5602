#!/usr/bin/env bash
# Regenerate proto/modal_proto/*.proto: the part of Modal's gRPC API agentform
# speaks, from the official `modal` wheel (the source of truth for every wire
# fact of `src/sandbox/modal/`). Rerunnable; the output is checked in, so a
# build never needs this script, Python or protoc.
#
#   scripts/modal-proto.sh [VENV_DIR]
#
# VENV_DIR (default: target/modal-proto-venv) gets the `protobuf` package
# through scripts/sdk-venv.sh; the wheel is downloaded with
# `pip download --no-deps modal==$MODAL_VERSION` (1.6.4 unless set).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/target/modal-proto-venv}"
MODAL_VERSION="${MODAL_VERSION:-1.6.4}"

bash "$ROOT/scripts/sdk-venv.sh" "$VENV" "modal==$MODAL_VERSION"
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
"$VENV/bin/python" -m pip download --disable-pip-version-check --quiet --no-deps \
    --only-binary=:all: --dest "$WHEELS" "modal==$MODAL_VERSION"
WHEEL="$(ls "$WHEELS"/modal-"$MODAL_VERSION"-*.whl)"
mkdir -p "$ROOT/proto/modal_proto"
"$VENV/bin/python" "$ROOT/scripts/modal-proto.py" "$WHEEL" "$ROOT/proto"
