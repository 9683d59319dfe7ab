#!/usr/bin/env bash
# Browser tests in both engines: Debian's Chromium and Debian's firefox-esr,
# driven by puppeteer-core (CDP for Chromium, WebDriver BiDi for Firefox),
# with axe-core for the console's accessibility. Installs what is missing
# (the browsers through apt-get, Node.js and npm through apt-get, the npm
# packages through npm ci), then runs every test against the debug binary
# (`cargo build` first).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d node_modules/puppeteer-core ] || [ ! -d node_modules/axe-core ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

cd ../..
export BROWSER_TEST_BINARY="${BROWSER_TEST_BINARY:-$PWD/target/debug/koostatus}"
for engine in chrome firefox; do
    node tests/browser/desktop.mjs "$engine"
    node tests/browser/console.mjs "$engine"
done
