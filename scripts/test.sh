#!/usr/bin/env bash
# The test command (`npm test`): installs what the tests need, builds, type-checks, lints with
# zero warnings, then runs the whole vitest suite. Its last line is `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-npm-deps.sh
bash scripts/ensure-test-deps.sh
npm run --silent build
npm run --silent typecheck
npm run --silent lint
exec npx --no-install vitest run "$@"
