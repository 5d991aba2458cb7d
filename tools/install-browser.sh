#!/bin/sh
# Debian's Chromium and its chromedriver for the real-browser test (tests/browser,
# `make test-browser`, part of `make test`). Idempotent: does nothing when both are there.
# Needs root (or sudo) and apt-get. Elsewhere, install Chromium/Chrome and a matching
# chromedriver yourself and point CHROMIUM=... CHROMEDRIVER=... at them.
set -eu
if [ -n "${CHROMIUM:-}" ] && [ -n "${CHROMEDRIVER:-}" ]; then
    exit 0
fi
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-browser: no apt-get here; install Chromium and chromedriver, then set" >&2
    echo "CHROMIUM=/path/to/chromium CHROMEDRIVER=/path/to/chromedriver" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-browser: installing chromium and chromium-driver (Debian)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
