#!/usr/bin/env bash
# The main command (`npm start`): installs the npm packages if needed, builds, and runs the
# embedded reference control plane with one agent and a sample run (`oci-cred-agent dev`).
# bubblewrap, the sandbox the run's phases run in, is installed through apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-npm-deps.sh
bash scripts/ensure-run-deps.sh
npm run --silent build
exec ./bin/oci-cred-agent dev "$@"
