#!/usr/bin/env bash
# Builds the Debian base image of deploy/docker/Dockerfile without any image registry:
# debootstrap (a Debian mirror is all it needs) + `docker import`, carrying the build
# host's CA certificates, so that apt and pip inside the image build trust whatever the
# host trusts (e.g. a TLS-inspecting proxy).
#
# usage: scripts/base-image.sh [TAG]        (default tag: dcodex-base:bookworm)
# env:   DOCKER (client command, may carry -H), DEBIAN_SUITE, DEBIAN_MIRROR,
#        DCODEX_BUILD_CACHE (where the debootstrap tarball is kept between builds),
#        HOST_CA_BUNDLE (the CA certificates carried into the image; default
#        /etc/ssl/certs/ca-certificates.crt)
#
# The debootstrap result is cached as a tarball (keyed by suite, mirror and this
# recipe's version); only the import (a few seconds) is redone each time.
set -euo pipefail
RECIPE=1
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tag=${1:-dcodex-base:$suite}
cache=${DCODEX_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dcodex-build}
read -r -a docker <<<"${DOCKER:-docker}"
trust=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

die() { echo "base-image: $*" >&2; exit 1; }
command -v debootstrap >/dev/null || die "needs debootstrap (scripts/container-deps.sh installs it)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
[ -s "$trust" ] || die "no CA bundle at $trust (set HOST_CA_BUNDLE)"

mkdir -p "$cache"
key=$(printf '%s %s %s' "$RECIPE" "$suite" "$mirror" | sha256sum | cut -c1-12)
tarball=$cache/debian-$suite-$key.tar
exec 8>"$cache/.base-image.lock"
flock 8
if [ ! -s "$tarball" ]; then
  work=$(mktemp -d "$cache/debootstrap.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "base-image: debootstrap $suite from $mirror (once; cached in $tarball)" >&2
  debootstrap --variant=minbase "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 \
    || { tail -20 "$work/log" >&2; die "debootstrap failed"; }
  # What a registry's debian:SUITE-slim has besides minbase: the same sources, no caches.
  rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/*
  tar --numeric-owner -C "$work/root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  rm -rf "$work"
  trap - EXIT
fi

# The host's trust store, as the image's: apt (https mirrors) and pip read the bundle,
# and a copy among the local certificates survives the bundle being regenerated when a
# package pulls in ca-certificates (update-ca-certificates appends local ones).
extra=$(mktemp -d)
trap 'rm -rf "$extra" "$extra.tar"' EXIT
mkdir -p "$extra/etc/ssl/certs" "$extra/usr/local/share/ca-certificates"
cp "$trust" "$extra/etc/ssl/certs/ca-certificates.crt"
cp "$trust" "$extra/usr/local/share/ca-certificates/build-host.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$extra/etc/pip.conf"
cp "$tarball" "$extra.tar"
tar --numeric-owner --owner=0 --group=0 -C "$extra" -rf "$extra.tar" \
  ./etc/ssl/certs/ca-certificates.crt ./usr/local/share/ca-certificates/build-host.crt ./etc/pip.conf
"${docker[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$extra.tar" "$tag" >/dev/null
echo "base-image: $tag" >&2
