#!/usr/bin/env bash
# Installs, through apt-get, what the agent itself needs to run here when it is missing:
# bubblewrap, the sandbox every phase of a run runs in (--isolation sandbox, the default).
set -euo pipefail
command -v bwrap >/dev/null && exit 0
exec bash "$(dirname "$0")/apt-install.sh" ensure-run-deps bubblewrap
