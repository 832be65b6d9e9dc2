#!/usr/bin/env bash
# Runs the whole test suite. The tests start real peers (nginx, Caddy, redis-server, an OpenID
# provider on Node.js, Debian's chromium), so this installs the Debian packages they need when
# they are missing and we are root, and the provider's npm packages from tests/idp's lockfile.
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
