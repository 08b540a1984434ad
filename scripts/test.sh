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

# tests/ring_cluster.rs starts throwaway etcds on loopback (Debian package `etcd-server`, which
# provides /usr/bin/etcd); with CI=true a missing etcd fails the test rather than skipping it.
if command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ]; then
    echo "etcd: $(etcd --version 2>&1 | head -n 1)"
else
    echo "etcd not found; installing the Debian package etcd-server"
    if as_root apt-get update &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server; then
        # The package starts a system etcd on :2379 where systemd runs; the tests start their
        # own on free ports and do not need it.
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            as_root systemctl stop etcd 2>/dev/null || true
        fi
    elif [ "${CI:-}" = "true" ]; then
        echo "cannot install etcd-server; tests/ring_cluster.rs needs etcd" >&2
        exit 1
    else
        echo "cannot install etcd-server; tests/ring_cluster.rs will skip (with CI=true it fails)"
    fi
fi

# tests/ring_etcd_security.rs makes its TLS certificates with the openssl command.
if command -v openssl >/dev/null 2>&1; then
    echo "openssl: $(openssl version)"
else
    echo "openssl not found; installing the Debian package openssl"
    if ! (as_root apt-get update &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl); then
        if [ "${CI:-}" = "true" ]; then
            echo "cannot install openssl; tests/ring_etcd_security.rs needs it" >&2
            exit 1
        fi
        echo "cannot install openssl; tests/ring_etcd_security.rs will skip (with CI=true it fails)"
    fi
fi

section "alerting rules (promtool)"
# deploy/prometheus/weft-alerts.yml: its syntax, the unit tests of every alert, and that every
# runbook_url points at a heading of docs/operations.md. promtool comes with the Debian
# package `prometheus` installed above; with CI=true a missing promtool is a failure.
if command -v promtool >/dev/null 2>&1; then
    promtool check rules deploy/prometheus/weft-alerts.yml
    promtool test rules deploy/prometheus/weft-alerts.test.yml
    # GitHub's anchors: the heading lower-cased, punctuation dropped, spaces as dashes.
    anchors=$(sed -n 's/^#\{1,6\} //p' docs/operations.md \
        | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9 _-]//g; s/ /-/g')
    missing=0
    for a in $(sed -n 's/.*runbook_url: *"\{0,1\}docs\/operations\.md#\([^"]*\)"\{0,1\}.*/\1/p' \
        deploy/prometheus/weft-alerts.yml); do
        if ! grep -qx -- "$a" <<<"$anchors"; then
            echo "runbook_url anchor #$a is not a heading of docs/operations.md" >&2
            missing=1
        fi
    done
    [ "$missing" -eq 0 ] || exit 1
    echo "every runbook_url points at a heading of docs/operations.md"
elif [ "${CI:-}" = "true" ]; then
    echo "promtool not found (Debian package prometheus); needed for the alerting rules" >&2
    exit 1
else
    echo "promtool not found; skipping the alerting rules (with CI=true this fails)"
fi

section "cargo test --all-targets"
cargo test --all-targets

section "cargo test --doc"
cargo test --doc

section "all tests passed"
