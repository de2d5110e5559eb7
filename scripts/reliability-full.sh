#!/usr/bin/env bash
# The full reliability run (docs/reliability.md), one command: `npm run reliability` or
# `bash scripts/reliability-full.sh`. Builds, then runs test/reliability/ at full size
# (RELIABILITY_FULL=1: 5 agents x concurrency 50 x 10,000 runs, 25 crash restarts, 1 GiB gzip
# bomb; RELIABILITY_CASES generated bundles and tar streams, 100,000 unless set), one file at a
# time so the timings are not skewed by the others, with no per-test timeout. Each test writes its
# figures to $RELIABILITY_RESULTS_DIR/<name>.json; they are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-npm-deps.sh
npm run --silent build
export RELIABILITY_FULL=1
export RELIABILITY_CASES="${RELIABILITY_CASES:-100000}"
export RELIABILITY_RESULTS_DIR="${RELIABILITY_RESULTS_DIR:-${TMPDIR:-/tmp}/oci-cred-agent-reliability}"
rm -rf "$RELIABILITY_RESULTS_DIR"
mkdir -p "$RELIABILITY_RESULTS_DIR"
status=0
npx --no-install vitest run test/reliability --no-file-parallelism --testTimeout 0 --hookTimeout 0 "$@" || status=$?
echo "figures ($RELIABILITY_RESULTS_DIR):"
for f in "$RELIABILITY_RESULTS_DIR"/*.json; do [ -e "$f" ] && cat "$f"; done
exit "$status"
