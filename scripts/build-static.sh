#!/usr/bin/env bash
# Build agentform as a static x86_64 Linux executable (musl): the binary that
# `provider: e2b` uploads into each E2B sandbox (see README, "Sessions on E2B").
#
#   scripts/build-static.sh [--debug]
#
# Prints the executable's path on success.
# Exit codes: 0 built and checked static;
#             3 a prerequisite is missing (named, with how to get it);
#             1 the build failed, or its result is not static.
set -euo pipefail

TARGET=x86_64-unknown-linux-musl
PROFILE=release
case "${1:-}" in
    "") ;;
    --debug) PROFILE=debug ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

missing() {
    echo "cannot build the static agentform: $1" >&2
    exit 3
}

command -v cargo >/dev/null 2>&1 || missing "cargo is not on PATH (install Rust: https://rustup.rs)"
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx "$TARGET" \
        || missing "the Rust target \`$TARGET\` is not installed; add it with: rustup target add $TARGET"
else
    sysroot="$(rustc --print sysroot)"
    [ -d "$sysroot/lib/rustlib/$TARGET" ] \
        || missing "the Rust standard library for \`$TARGET\` is not in $sysroot (no rustup here: install your distribution's musl target of Rust)"
fi
if ! command -v musl-gcc >/dev/null 2>&1 && ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
    echo "note: no musl C compiler (musl-gcc); the C parts of the TLS library are built with the" >&2
    echo "      system's cc, which usually works; if the build fails there, install musl-tools" >&2
fi

cd "$(dirname "$0")/.."
args=(build --locked --target "$TARGET")
[ "$PROFILE" = release ] && args+=(--release)
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo "${args[@]}" >&2

out="${CARGO_TARGET_DIR:-target}/$TARGET/$PROFILE/agentform"
[ -x "$out" ] || { echo "the build left no executable at $out" >&2; exit 1; }
if command -v readelf >/dev/null 2>&1 && readelf -l "$out" | grep -q "Requesting program interpreter"; then
    echo "$out is linked dynamically; E2B sandboxes need a static executable" >&2
    exit 1
fi
echo "$out"
