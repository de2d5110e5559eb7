#!/usr/bin/env bash
# Installs the npm packages (among them the pinned Node 24, the `node` devDependency) when
# node_modules is missing or older than package-lock.json. `npm ci` also builds dist/ (prepare).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ ! -x node_modules/node/bin/node ]; then
  echo "ensure-npm-deps: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund
fi
