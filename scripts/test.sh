#!/usr/bin/env bash
# The project's test command: installs what the tests need if it is missing, then runs every
# test target and the doctests. Works on a fresh Debian machine with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s ====\n' "$*"; }

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root to run: $* (and sudo is not installed)" >&2
        return 1
    fi
}

section "dependencies"
# tests/prometheus_e2e.rs drives the real Prometheus 2.x (Debian package `prometheus`).
if command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ]; then
    echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
else
    echo "prometheus not found; installing the Debian package"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
    # The package starts a system Prometheus on :9090 where systemd runs; the tests do not
    # need it, and it would only compete for the CPU.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl stop prometheus prometheus-node-exporter 2>/dev/null || true
    fi
fi

# tests/store_conformance.rs runs its S3 cases against a real moto server (PyPI `moto[server]`);
# with CI=true they fail rather than skip when it is missing.
if command -v moto_server >/dev/null 2>&1; then
    echo "moto_server: $(command -v moto_server)"
else
    echo "moto_server not found; installing moto[server] with pip"
    # Debian's pip refuses to touch the system Python (PEP 668) unless told to.
    pip install 'moto[server]' || pip install --break-system-packages 'moto[server]'
fi

section "cargo test --all-targets"
cargo test --all-targets

section "cargo test --doc"
cargo test --doc

section "all tests passed"
