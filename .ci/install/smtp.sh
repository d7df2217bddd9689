#!/usr/bin/env bash
# The SMTP tests' peers (tests/smtp.rs, engine/tests/deliver_smtp.rs): a real
# SMTP server (aiosmtpd) and a real DKIM verifier (dkimpy, with PyNaCl for
# Ed25519), for the `python3` on PATH. Idempotent: does nothing when they
# import already.
set -euo pipefail
need='import aiosmtpd, dkim, nacl'
if command -v python3 >/dev/null 2>&1 && python3 -c "$need" 2>/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v python3 >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends python3
fi
if python3 -m pip --version >/dev/null 2>&1; then
  # pip refuses a distribution's own Python without the flag; older pips
  # do not know the flag.
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
    aiosmtpd dkimpy pynacl \
    || python3 -m pip install --quiet --disable-pip-version-check aiosmtpd dkimpy pynacl
else
  apt-get update
  apt-get install -y --no-install-recommends python3-aiosmtpd python3-dkim python3-nacl
fi
python3 -c "$need"
echo "smtp peers ready: aiosmtpd, dkimpy, pynacl"
