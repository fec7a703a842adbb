#!/usr/bin/env bash
# The whole test suite, browser test included.
#
# Installs Debian's chromium and chromium-driver, and nodejs, when they are
# missing (as root, or through sudo), then runs every test with every feature. With
# PIPELINE_REQUIRE_BROWSER=1 the browser test fails, instead of skipping,
# if it cannot find the browser. Extra arguments go to `cargo test`, e.g.
#   bash scripts/test.sh --test test_browser
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver || ! -x /usr/bin/tmux ]]; then
    echo "scripts/test.sh: installing chromium and chromium-driver for the browser test" >&2
    if [[ $(id -u) -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        echo "scripts/test.sh: not root and no sudo: install chromium and chromium-driver, then run again" >&2
        exit 1
    fi
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver tmux  # tmux: the terminal view's test
fi

if ! command -v node >/dev/null; then
    echo "scripts/test.sh: installing nodejs for the page's JavaScript tests" >&2
    if [[ $(id -u) -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        echo "scripts/test.sh: not root and no sudo: install nodejs, then run again" >&2
        exit 1
    fi
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs
fi

export PIPELINE_REQUIRE_BROWSER=1
exec cargo test --all-features "$@"
