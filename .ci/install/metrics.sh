#!/usr/bin/env bash
# tests/metrics.rs parses `GET /metrics` with the reference Prometheus
# parsers (OpenMetrics and text 0.0.4) of Python's prometheus_client. The
# test tries `python3` on PATH, then /usr/bin/python3 (Debian's, which
# python3-prometheus-client serves). Idempotent: does nothing when either
# can import the parsers.
set -euo pipefail
probe='import prometheus_client.openmetrics.parser, prometheus_client.parser'
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c "$probe" 2>/dev/null; then
    exit 0
  fi
done
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-prometheus-client
/usr/bin/python3 -c "$probe"
