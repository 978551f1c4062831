#!/bin/sh
# Install Debian's Chromium for the browser tests (tests/browser) when this machine allows it.
# Never fails on a laptop: without root or apt-get the browser tests skip. In CI (CI=true) a
# failed install is an error, because there the browser tests must run.
CHROMIUM=/usr/bin/chromium

case "$(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]')" in
  1 | true | yes) ci=1 ;;
  *) ci=0 ;;
esac

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if apt-get update -qq >/dev/null \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    && [ -x "$CHROMIUM" ]; then
    echo "browser tests: installed Debian's chromium at $CHROMIUM"
    exit 0
  fi
  if [ "$ci" = 1 ]; then
    echo "ERROR: browser tests: 'apt-get install chromium' failed (CI=true: the browser tests need $CHROMIUM)" >&2
    exit 1
  fi
  echo "note: browser tests: could not install chromium with apt-get; they will skip."
  exit 0
fi

if [ "$ci" = 1 ]; then
  echo "ERROR: browser tests: $CHROMIUM is missing and cannot be installed here (needs root and apt-get; CI=true: the browser tests must run)" >&2
  exit 1
fi
echo "note: browser tests: $CHROMIUM is missing (install it with 'apt-get install chromium' as root); they will skip."
exit 0
