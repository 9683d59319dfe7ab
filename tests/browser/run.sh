#!/usr/bin/env bash
# Browser tests: headless Chromium (Debian's package) driven by Playwright.
# Installs what is missing (Chromium through apt-get, playwright-core through
# npm), then runs every test against the debug binary (`cargo build` first).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

cd ../..
export BROWSER_TEST_BINARY="${BROWSER_TEST_BINARY:-$PWD/target/debug/koostatus}"
node tests/browser/desktop.mjs
node tests/browser/console.mjs
