#!/usr/bin/env bash
# Installs the Debian packages the tests use, through apt-get, when any is missing:
# a real registry (docker-registry), a real OCI client (skopeo), htpasswd for bcrypt password
# files, openssl for test CAs, a real Secret Service (gnome-keyring under dbus-run-session),
# systemd-analyze for the unit checks, and debootstrap, systemd-nspawn (systemd-container),
# apt-ftparchive (apt-utils) and xz for the boot test of docs/install-systemd.md, tini, the
# runner's init in its container (test/runner/), and bubblewrap, the sandbox every phase runs in
# by default (every test that starts the agent, and the benchmark). Tests never skip for a
# missing tool: this installs it.
set -euo pipefail
packages=(docker-registry skopeo apache2-utils openssl gnome-keyring dbus libsecret-tools systemd procps util-linux
  debootstrap systemd-container apt-utils xz-utils tini bubblewrap)
exec bash "$(dirname "$0")/apt-install.sh" ensure-test-deps "${packages[@]}"
