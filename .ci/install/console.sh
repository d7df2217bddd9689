#!/usr/bin/env bash
# The console's end-to-end test (tests/console.rs) drives Debian's headless
# Chromium over the DevTools protocol. Idempotent: nothing to do when
# `chromium --version` already works.
set -euo pipefail
if chromium --version >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium fonts-dejavu-core
chromium --version
