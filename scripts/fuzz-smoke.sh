#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each one briefly, so a decoder change that breaks
# a target (or a quick crash) shows up in CI. The real fuzzing campaigns are longer:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -- -max_total_time=60
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${WEFT_FUZZ_SECONDS:-10}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build --dev
log_dir="$(mktemp -d)"
for target in $(cargo fuzz list); do
    echo "---- fuzz $target for ${seconds}s"
    log="$log_dir/$target.log"
    if ! cargo fuzz run --dev "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E '^Done' "$log" | tail -n 1
done
echo "all fuzz targets built and ran"
