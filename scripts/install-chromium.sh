#!/usr/bin/env bash
# Installs the headless browser the TypeScript client's browser test drives
# (clients/ts/scripts/test-browser.sh): Debian's `chromium` package, at /usr/bin/chromium.
#
#   scripts/install-chromium.sh
#
# Idempotent: does nothing when /usr/bin/chromium exists. Otherwise, as root, runs
# `apt-get update` and `apt-get install -y --no-install-recommends chromium`; as anyone else it
# fails and says what to run. No browser is downloaded from anywhere else.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
  echo "chromium is installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "$CHROMIUM is missing and this is not root: run as root" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$CHROMIUM is missing and there is no apt-get here: install Chromium at $CHROMIUM yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium
if [[ ! -x "$CHROMIUM" ]]; then
  echo "apt-get installed chromium, but $CHROMIUM is not there" >&2
  exit 1
fi
echo "installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
