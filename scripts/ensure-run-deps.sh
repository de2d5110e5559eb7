#!/usr/bin/env bash
# Installs, through apt-get, what the agent itself needs to run here when it is missing:
# bubblewrap, the sandbox every phase of a run runs in (--isolation sandbox, the default).
set -euo pipefail
command -v bwrap >/dev/null && exit 0
echo "ensure-run-deps: installing bubblewrap (the sandbox runs' phases run in)" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "ensure-run-deps: need root or sudo to apt-get install bubblewrap" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
