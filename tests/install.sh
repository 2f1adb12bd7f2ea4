#!/bin/sh
# Everything the tests need, on a fresh Debian machine: the Python packages, and Debian's Chromium
# for the browser tests in tests/e2e (Playwright drives the system browser, so Playwright's own
# browser download is never needed). Without Chromium the browser tests skip and say why.
set -e
cd "$(dirname "$0")/.."
pip install -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        as_root=""
        [ "$(id -u)" = 0 ] || as_root="sudo"
        $as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium \
            || echo "tests/install.sh: could not install Chromium; the browser tests will be skipped"
    else
        echo "tests/install.sh: no apt-get here; install Chromium (or set GENLAB_CHROMIUM) for the browser tests"
    fi
fi
