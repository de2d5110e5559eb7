#!/usr/bin/env bash
# The test command (`npm test`): installs what the tests need, builds, type-checks, lints with
# zero warnings, checks formatting (prettier), dead code (knip) and the layer table
# (dependency-cruiser), then runs the whole vitest suite. Its last line is `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-npm-deps.sh
bash scripts/ensure-test-deps.sh
npm run --silent build
npm run --silent typecheck
npm run --silent lint
npm run --silent format:check
npm run --silent deadcode
npm run --silent layers
exec npx --no-install vitest run "$@"
