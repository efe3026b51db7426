#!/usr/bin/env bash
# Get promtool from Debian's `prometheus` package, once, and print its path. The package is
# only downloaded and unpacked (`apt-get download`, `dpkg -x`): no service is installed. The
# binary is kept in ~/.cache/parley/promtool/<package version>/promtool; a later run that
# finds it there prints its path without touching apt.
#   tests/k8s/promtool.sh          print the path (fetching it first when missing)
set -euo pipefail
root="${PARLEY_CACHE:-$HOME/.cache/parley}/promtool"

say() { echo "[promtool] $*" >&2; }

cached() {  # the newest promtool in the cache, if any
  local found
  found="$(ls -1d "$root"/*/promtool 2>/dev/null | sort -V | tail -1)"
  [[ -n "$found" && -x "$found" ]] && echo "$found"
}

version="$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
if [[ -z "$version" || "$version" == "(none)" ]]; then
  if found="$(cached)"; then echo "$found"; exit 0; fi
  say "Debian's prometheus package is not known to apt (run apt-get update) and none is cached"
  exit 1
fi
target="$root/$version/promtool"
if [[ ! -x "$target" ]]; then
  say "fetching Debian's prometheus $version for its promtool (download and unpack only)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"  # apt's _apt sandbox user writes the download here
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "prometheus=$version" >/dev/null)
  dpkg -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$(dirname "$target")"
  install -m 755 "$work/root/usr/bin/promtool" "$target.tmp"
  mv "$target.tmp" "$target"
fi
echo "$target"
