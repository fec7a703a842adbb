#!/usr/bin/env bash
# The whole test suite, browser test included.
#
# Installs Debian's chromium and chromium-driver, tmux, nodejs and prometheus when they
# are missing (as root, or through sudo, with one apt-get), then runs every
# test with every feature. With
# PIPELINE_REQUIRE_BROWSER=1 the browser test fails, instead of skipping,
# if it cannot find the browser. Extra arguments go to `cargo test`, e.g.
#   bash scripts/test.sh --test test_browser
set -euo pipefail

cd "$(dirname "$0")/.."

# What the suite needs from Debian: the browser tests' chromium and
# chromedriver, the terminal view's tmux, the page's node (JavaScript tests),
# prometheus (with promtool) for the metrics tests, nats-server for the NATS
# tests, haproxy for the web nodes behind a proxy.
need=()
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || need+=(chromium chromium-driver)
command -v tmux >/dev/null || need+=(tmux)
command -v node >/dev/null || need+=(nodejs)
# The metrics tests' real Prometheus server and its promtool.
[[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]] || need+=(prometheus)
[[ -x /usr/sbin/nats-server ]] || command -v nats-server >/dev/null || need+=(nats-server)
# The web-node browser test's real proxy in front of two web nodes.
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
if (( ${#need[@]} )); then
    echo "scripts/test.sh: installing ${need[*]}" >&2
    if [[ $(id -u) -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        echo "scripts/test.sh: not root and no sudo: install ${need[*]}, then run again" >&2
        exit 1
    fi
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

export PIPELINE_REQUIRE_BROWSER=1
exec cargo test --all-features "$@"
