#!/usr/bin/env bash
# The whole test suite, as CI runs it. On a fresh Debian machine with Rust it first installs
# what the tests drive for real (Prometheus and promtool, Alertmanager), then runs:
#   formatting and lint checks, unit and integration tests, validation of every deployment
#   file, and the end-to-end test against the real Prometheus and Alertmanager, and the
#   OpenMetrics answer through the reference parser (pip: prometheus-client), and the triage
#   console in headless Chromium over WebDriver (apt: chromium, chromium-driver; pip: selenium).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "==> installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

step() { printf '\n==> %s\n' "$*"; }

apt_install prometheus prometheus-alertmanager python3 wrk curl chromium chromium-driver

# Where cargo puts binaries: CARGO_TARGET_DIR, a config file or the default, as cargo resolves it.
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin_dir="$target_dir/debug"
export KRS_EXPORTER_BIN="$bin_dir/krs-exporter"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test (unit and integration, every crate of the workspace)"
cargo test --locked --workspace

step "deployment files: rules, dashboards, Kubernetes, compose, Dockerfile, systemd"
scripts/validate-deploy.sh

step "end to end: simulator, exporter, Prometheus, Alertmanager"
cargo build --locked --workspace --bins
python3 scripts/e2e.py --bin-dir "$bin_dir"

step "OpenMetrics: the reference parser reads the demo's scrapes and a hostile scenario's"
python3 -c 'import prometheus_client' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check prometheus-client
python3 scripts/check-openmetrics.py --bin-dir "$bin_dir"

step "the triage console in a real browser (headless Chromium): what an analyst sees, at 1280 and 390 px"
python3 -c 'import selenium' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check 'selenium>=4,<5'
KRS_SCREENSHOTS="${KRS_SCREENSHOTS:-$target_dir/screenshots}" \
    python3 scripts/browser-test.py --bin-dir "$bin_dir"

step "end to end, sharded: three shards and a spare replica equal one unsharded exporter"
python3 scripts/e2e-sharded.py --bin-dir "$bin_dir"

step "load on the exporter's endpoints (wrk): scrapes keep answering, polling goes on"
python3 scripts/endpoint_load.py --bin-dir "$bin_dir"
