# Brings what Sturdy needs when the machine lacks it: Node.js >= 22.19 and the
# pinned pnpm, both from the npm registry (a machine with Node 20 and npm is
# enough), and Debian's chromium (the dashboard's browser test), pgbouncer
# (the PgBouncer tests) and redis-server (the shared breaker's tests), with
# apt-get as root or through sudo. Source it, so
# the PATH it sets stays in your shell:
#
#   source scripts/bootstrap.sh
#
# Tools go to $STURDY_TOOLS (default ~/.local/share/sturdy-tools) and are reused.
# shellcheck shell=bash

sturdy_bootstrap() {
  local tools="${STURDY_TOOLS:-$HOME/.local/share/sturdy-tools}"
  local pnpm_version
  pnpm_version="$(sed -n 's/.*"packageManager": *"pnpm@\([^"]*\)".*/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../package.json")"
  # The npm-packaged node trusts only its bundled CAs; the registry may sit behind the system's.
  if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  fi

  node_ok() {
    command -v node >/dev/null 2>&1 &&
      node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=19)?0:1)'
  }
  if ! node_ok && [ -x "$tools/node/node_modules/node/bin/node" ]; then
    export PATH="$tools/node/node_modules/node/bin:$PATH"
  fi
  if ! node_ok; then
    echo "bootstrap: Node $(node --version 2>/dev/null || echo 'not found') is older than 22.19; installing Node 24 into $tools/node" >&2
    mkdir -p "$tools/node"
    npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error node@24 >&2 || return 1
    export PATH="$tools/node/node_modules/node/bin:$PATH"
    node_ok || { echo "bootstrap: could not bring Node >= 22.19" >&2; return 1; }
  fi

  if [ -x "$tools/pnpm-$pnpm_version/node_modules/.bin/pnpm" ]; then
    export PATH="$tools/pnpm-$pnpm_version/node_modules/.bin:$PATH"
  fi
  if [ "$(pnpm --version 2>/dev/null)" != "$pnpm_version" ]; then
    echo "bootstrap: installing pnpm $pnpm_version into $tools/pnpm-$pnpm_version" >&2
    mkdir -p "$tools/pnpm-$pnpm_version"
    npm install --prefix "$tools/pnpm-$pnpm_version" --no-audit --no-fund --loglevel=error "pnpm@$pnpm_version" >&2 || return 1
    export PATH="$tools/pnpm-$pnpm_version/node_modules/.bin:$PATH"
  fi
  # Debian packages the tests need: chromium for the dashboard's browser test, pgbouncer for the PgBouncer
  # tests, redis-server for the shared breaker's tests. Debian puts pgbouncer in /usr/sbin, which a non-root
  # PATH may lack: look there too.
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; } || missing+=(pgbouncer)
  { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; } || missing+=(redis-server)
  if [ "${#missing[@]}" -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
      echo "bootstrap: installing ${missing[*]} with apt-get (chromium: the dashboard's browser test; pgbouncer: the PgBouncer tests; redis-server: the shared breaker's tests)" >&2
      $sudo apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || return 1
    else
      echo "bootstrap: ${missing[*]} missing and cannot be installed here (needs apt-get as root or sudo); the tests that need them will fail" >&2
    fi
  fi
  local pgbouncer_version
  pgbouncer_version="$({ pgbouncer --version || /usr/sbin/pgbouncer --version; } 2>/dev/null | head -n 1)"
  local redis_version
  redis_version="$({ redis-server --version || /usr/bin/redis-server --version; } 2>/dev/null | head -n 1 | cut -d ' ' -f 1-3)"
  echo "bootstrap: node $(node --version), pnpm $(pnpm --version), $(chromium --version 2>/dev/null || echo 'no chromium'), ${pgbouncer_version:-no pgbouncer}, ${redis_version:-no redis-server}" >&2
}

sturdy_bootstrap
